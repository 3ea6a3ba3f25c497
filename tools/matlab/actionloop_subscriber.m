function sub = actionloop_subscriber(endpoint, varargin)
%ACTIONLOOP_SUBSCRIBER  Subscribe to a decoder's actions, events and status heartbeats.
%   sub = actionloop_subscriber('tcp://127.0.0.1:5556')
%   sub = actionloop_subscriber(endpoint, 'topics', {'event'})     only onsets/offsets
%   sub = actionloop_subscriber(endpoint, 'format', 'json')        a JSON mirror endpoint:
%         (topic, UTF-8 JSON) messages, decoded with jsondecode (MATLAB R2016b+, Octave 7+)
%
%   Then: [topic, msg, sub] = actionloop_receive(sub, 1.0);  % topic '' after 1 s without one
%   Messages that break the protocol are skipped and counted (sub.rejected, sub.last_rejection),
%   as the Python ActionSubscriber does, so a bad publisher cannot stop experiment code.

    opts = actionloop_options(struct('topics', {{'action', 'event', 'status'}}, 'format', 'msgpack', ...
                                     'bind', false), varargin);
    if ~any(strcmp(opts.format, {'msgpack', 'json'}))
        error('actionloop:subscriber', 'format must be msgpack or json (got %s)', opts.format);
    end
    endpoint = char(endpoint);  % MATLAB string arrays ("...") as well as char
    topics = cellstr(opts.topics);
    sub.socket = actionloop_zmq('socket', 'SUB');
    for k = 1:numel(topics)
        actionloop_zmq('subscribe', sub.socket, topics{k});
    end
    sub.endpoint = actionloop_zmq('attach', sub.socket, endpoint, opts.bind);
    sub.format = opts.format;
    sub.received = 0;
    sub.rejected = 0;
    sub.last_rejection = '';
end
