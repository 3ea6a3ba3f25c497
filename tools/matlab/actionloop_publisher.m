function pub = actionloop_publisher(endpoint, varargin)
%ACTIONLOOP_PUBLISHER  Open a frame publisher (ZeroMQ XPUB) for the actionloop decoder.
%   pub = actionloop_publisher('tcp://127.0.0.1:5555')                  bind (the default)
%   pub = actionloop_publisher('tcp://10.0.0.2:5555', 'bind', false)    connect to a daemon
%                                                                        with frames_mode = "bind"
%   pub = actionloop_publisher(endpoint, 'session', 'rig2-mouse12')     session id in every frame
%
%   Then: [ok, pub] = actionloop_wait_subscriber(pub, 5);   % optional, avoids ZeroMQ's slow joiner
%         pub = actionloop_publish(pub, frame);             % as often as frames come
%         actionloop_close(pub);
%   pub is a struct (MATLAB value semantics): keep the one each call returns.
%
%   Timestamps are nanoseconds of this publisher's clock, counted from this call (tic/toc), so
%   they never pass 2^53 and are not the decoder host's CLOCK_MONOTONIC: set the daemon's
%   sockets.frames_clock = "separate" (docs/rig.md).

    opts = struct('bind', true, 'session', '');
    opts = actionloop_options(opts, varargin);
    endpoint = char(endpoint);  % MATLAB string arrays ("...") as well as char
    opts.session = char(opts.session);
    if ~ischar(opts.session) || numel(opts.session) > 128
        error('actionloop:publisher', 'session must be a string of at most 128 characters');
    end
    pub.socket = actionloop_zmq('socket', 'XPUB');
    pub.endpoint = actionloop_zmq('attach', pub.socket, endpoint, opts.bind);
    pub.session = opts.session;
    pub.next_seq = uint64(0);
    pub.subscribers = 0;
    pub.clock = tic;
    pub.template = struct('key', '', 'bytes', uint8([]), 'slots', []);
end
