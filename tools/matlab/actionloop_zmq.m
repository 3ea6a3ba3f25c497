function varargout = actionloop_zmq(op, varargin)
%ACTIONLOOP_ZMQ  The few ZeroMQ calls the actionloop clients make, in one place.
%   sock  = actionloop_zmq('socket', type)          type: 'XPUB', 'PUB' or 'SUB'
%   ep    = actionloop_zmq('bind', sock, endpoint)  the endpoint actually bound (port '*' resolved)
%           actionloop_zmq('connect', sock, endpoint)
%   ep    = actionloop_zmq('attach', sock, endpoint, bind)   bind (true) or connect (false)
%           actionloop_zmq('subscribe', sock, prefix)
%           actionloop_zmq('send', sock, parts)     parts: cell of uint8/char rows, one message
%   parts = actionloop_zmq('recv', sock, wait_ms, max_bytes)
%           the next multipart message as a cell of uint8 rows, {} when none came within wait_ms
%           (0: do not wait); a part of max_bytes or more comes back as exactly max_bytes bytes
%           (the Octave binding truncates it), so callers refuse parts of that length
%           actionloop_zmq('close', sock)
%
%   GNU Octave: the octave-zeromq package (Debian/Ubuntu: apt-get install octave-zeromq;
%   elsewhere: pkg install -forge zeromq), loaded here on first use.
%   MATLAB: JeroMQ, the Java implementation of ZeroMQ (put jeromq-<version>.jar on the Java
%   class path, e.g. javaaddpath('C:\rig\jeromq-0.6.0.jar')), as MATLAB has no ZeroMQ binding of
%   its own. The environment variable ACTIONLOOP_ZMQ (octave-zeromq or jeromq) overrides the
%   choice, read once per session: Octave with Java can use JeroMQ too. Everything else in
%   tools/matlab is plain MATLAB code shared by both.

    persistent backend
    if isempty(backend)
        backend = getenv('ACTIONLOOP_ZMQ');
        if isempty(backend)
            if exist('OCTAVE_VERSION', 'builtin') ~= 0
                backend = 'octave-zeromq';
            else
                backend = 'jeromq';
            end
        end
        if strcmp(backend, 'octave-zeromq')
            pkg('load', 'zeromq');
        elseif ~strcmp(backend, 'jeromq')
            error('actionloop:zmq', 'ACTIONLOOP_ZMQ must be octave-zeromq or jeromq (got %s)', backend);
        end
    end
    sock = [];
    args = varargin;
    if ~strcmp(op, 'socket')
        sock = varargin{1};
        args = varargin(2:end);
    end
    if strcmp(op, 'attach')  % bind or connect: the endpoint as bound, or as given
        if args{2}
            varargout{1} = actionloop_zmq('bind', sock, args{1});
        else
            actionloop_zmq('connect', sock, args{1});
            varargout{1} = args{1};
        end
    elseif strcmp(backend, 'octave-zeromq')
        [varargout{1:nargout}] = octave_op(op, sock, args{:});
    else
        [varargout{1:nargout}] = jeromq_op(op, sock, args{:});
    end
end

function varargout = octave_op(op, sock, varargin)
    switch op
        case 'socket'
            types = struct('XPUB', ZMQ_XPUB, 'PUB', ZMQ_PUB, 'SUB', ZMQ_SUB);
            varargout{1} = zmq_socket(types.(varargin{1}));
        case 'bind'
            if ~zmq_bind(sock, varargin{1})
                error('actionloop:zmq', 'cannot bind %s: %s', varargin{1}, zmq_strerror());
            end
            varargout{1} = zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT);
        case 'connect'
            if ~zmq_connect(sock, varargin{1})
                error('actionloop:zmq', 'cannot connect to %s: %s', varargin{1}, zmq_strerror());
            end
        case 'subscribe'
            zmq_setsockopt(sock, ZMQ_SUBSCRIBE, char(varargin{1}));
        case 'send'
            parts = varargin{1};
            for k = 1:numel(parts)
                flags = 0;
                if k < numel(parts)
                    flags = ZMQ_SNDMORE;
                end
                if zmq_send(sock, uint8(parts{k}), flags) < 0
                    error('actionloop:zmq', 'send failed: %s', zmq_strerror());
                end
            end
        case 'recv'
            varargout{1} = {};
            if ~zmq_poll(sock, varargin{1})
                return
            end
            parts = {};
            while true
                parts{end + 1} = reshape(zmq_recv(sock, varargin{2}, 0), 1, []); %#ok<AGROW>
                if ~zmq_getsockopt(sock, ZMQ_RCVMORE)
                    break
                end
            end
            varargout{1} = parts;
        case 'close'
            zmq_close(sock);
        otherwise
            error('actionloop:zmq', 'unknown operation %s', op);
    end
end

function varargout = jeromq_op(op, sock, varargin)
    % JeroMQ's org.zeromq.ZMQ API through the Java interface of MATLAB or Octave; Java byte[] <-> int8.
    % Only calls both interfaces share: javaMethod for the static factory, socket types as
    % ZeroMQ's numbers, instance methods with dot syntax.
    persistent context
    if isempty(context)
        context = javaMethod('context', 'org.zeromq.ZMQ', 1);
    end
    switch op
        case 'socket'
            types = struct('PUB', 1, 'SUB', 2, 'XPUB', 9);  % zmq.h's ZMQ_PUB, ZMQ_SUB, ZMQ_XPUB
            sock = context.socket(types.(varargin{1}));
            sock.setLinger(100);  % a bounded flush at close, as the Python clients
            varargout{1} = sock;
        case 'bind'
            endpoint = varargin{1};
            if numel(endpoint) > 2 && strcmp(endpoint(end - 1:end), ':*')
                % JeroMQ 0.3 has no ZMQ_LAST_ENDPOINT; bindToRandomPort is in every version
                port = sock.bindToRandomPort(endpoint(1:end - 2));
                varargout{1} = sprintf('%s:%d', endpoint(1:end - 2), port);
            else
                sock.bind(endpoint);
                varargout{1} = endpoint;
            end
        case 'connect'
            sock.connect(varargin{1});
        case 'subscribe'
            sock.subscribe(to_java(varargin{1}));
        case 'send'
            parts = varargin{1};
            for k = 1:numel(parts)
                if k < numel(parts)
                    ok = sock.sendMore(to_java(parts{k}));
                else
                    ok = sock.send(to_java(parts{k}), 0);
                end
                if ~ok
                    error('actionloop:zmq', 'send failed');
                end
            end
        case 'recv'
            varargout{1} = {};
            sock.setReceiveTimeOut(varargin{1});  % -1: wait forever, 0: do not wait, as zmq_poll
            first = sock.recv(0);
            if isempty(first)  % null: nothing came (no protocol message has an empty first part)
                return
            end
            parts = {from_java(first, varargin{2})};
            while sock.hasReceiveMore()
                parts{end + 1} = from_java(sock.recv(0), varargin{2}); %#ok<AGROW>
            end
            varargout{1} = parts;
        case 'close'
            sock.close();
        otherwise
            error('actionloop:zmq', 'unknown operation %s', op);
    end
end

function out = to_java(bytes)
    out = typecast(uint8(bytes(:)'), 'int8');
end

function out = from_java(bytes, max_bytes)
    out = typecast(int8(bytes(:)'), 'uint8');
    out = out(1:min(end, max_bytes));
end
