function [topic, msg, sub] = actionloop_receive(sub, timeout_s)
%ACTIONLOOP_RECEIVE  The next valid action, event or status message of a subscriber.
%   [topic, msg, sub] = actionloop_receive(sub, 1.0)   wait up to 1 s (Inf: forever, 0: poll)
%   topic is 'action', 'event' or 'status' and msg a struct with the fields of
%   docs/wire-protocol.md (msg.action, msg.confidence, msg.probs, ...); after timeout_s without
%   a valid message topic is '' and msg []. Integers arrive as uint64 (int64 when negative) in
%   msgpack mode and as double in JSON mode: compute latencies as differences of the integers,
%   e.g. double(msg.t_pub_ns - msg.t_acq_ns) / 1e6 milliseconds.

    if nargin < 2
        timeout_s = 1.0;
    end
    started = tic;
    topic = '';
    msg = [];
    while true
        if isinf(timeout_s)
            wait_ms = -1;
        else
            wait_ms = max(0, round((timeout_s - toc(started)) * 1000));
        end
        parts = actionloop_zmq('recv', sub.socket, wait_ms, 65537);
        if isempty(parts)
            return
        end
        [topic, msg, reason] = actionloop_decode_message(parts, sub.format);
        if isempty(reason)
            sub.received = sub.received + 1;
            return
        end
        sub.rejected = sub.rejected + 1;
        sub.last_rejection = reason;
        if ~isinf(timeout_s) && toc(started) >= timeout_s
            topic = '';
            msg = [];
            return
        end
    end
end
