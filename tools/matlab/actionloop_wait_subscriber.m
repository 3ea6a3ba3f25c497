function [ok, pub] = actionloop_wait_subscriber(pub, timeout_s)
%ACTIONLOOP_WAIT_SUBSCRIBER  Wait until a subscriber to frames has joined (up to TIMEOUT_S seconds).
%   [ok, pub] = actionloop_wait_subscriber(pub, 5)
%   ZeroMQ drops what a PUB socket sends before a subscriber has joined; the XPUB socket sees
%   each subscription arrive, so a publisher that waits here loses no frame to a late join.

    deadline = tic;
    while pub.subscribers == 0
        remaining_ms = round((timeout_s - toc(deadline)) * 1000);
        if remaining_ms <= 0
            break
        end
        parts = actionloop_zmq('recv', pub.socket, remaining_ms, 256);
        if ~isempty(parts) && ~isempty(parts{1})
            if parts{1}(1) == 1
                pub.subscribers = pub.subscribers + 1;
            elseif parts{1}(1) == 0
                pub.subscribers = max(0, pub.subscribers - 1);
            end
        end
    end
    ok = pub.subscribers > 0;
end
