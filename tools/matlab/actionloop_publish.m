function [pub, seq] = actionloop_publish(pub, pixels, varargin)
%ACTIONLOOP_PUBLISH  Send one frame to the decoder (the "frame" message of docs/wire-protocol.md).
%   pub = actionloop_publish(pub, frame)                       seq: one more than the last
%   pub = actionloop_publish(pub, frame, 'seq', 41, 't_acq_ns', t)
%   [pub, seq] = actionloop_publish(pub, frameT, 'layout', 'rowmajor', 'channel', 1)
%
%   frame: height x width (uint8, uint16, int8, int16, single or double; see
%   actionloop_frame_pixels). seq and t_acq_ns (nanoseconds of this publisher's clock,
%   actionloop_clock_ns(pub); default: now) are integers 0..2^64-1. The pixels are copied into
%   the message, so the caller may reuse its buffer at once.

    opts = actionloop_options(struct('seq', pub.next_seq, 't_acq_ns', [], 'channel', 0, 'plane', 0, ...
                                     'layout', 'matlab'), varargin);
    [bytes, shape, dtype] = actionloop_frame_pixels(pixels, opts.layout);
    key = sprintf('%d %d %s %d %d %s', shape(1), shape(2), dtype, opts.channel, opts.plane, pub.session);
    if ~strcmp(key, pub.template.key)
        pub.template = actionloop_frame_template(shape, dtype, opts.channel, opts.plane, pub.session);
    end
    seq = wire_uint64(opts.seq, 'seq');
    t_pub = actionloop_clock_ns(pub);
    if isempty(opts.t_acq_ns)
        t_acq = t_pub;
    else
        t_acq = wire_uint64(opts.t_acq_ns, 't_acq_ns');
    end
    header = pub.template.bytes;
    slots = pub.template.slots;
    header(slots(1):slots(1) + 7) = fliplr(typecast(seq, 'uint8'));  % msgpack is big-endian
    header(slots(2):slots(2) + 7) = fliplr(typecast(t_acq, 'uint8'));
    header(slots(3):slots(3) + 7) = fliplr(typecast(t_pub, 'uint8'));
    actionloop_zmq('send', pub.socket, {uint8('frame'), header, bytes});
    pub.next_seq = seq + 1;  % uint64 arithmetic saturates at 2^64-1
end

function out = wire_uint64(value, name)
    % the protocol's one integer range; a writer refuses anything outside it
    if ~isscalar(value) || ~isreal(value) || ~(isinteger(value) || (isfloat(value) && value == round(value))) ...
            || value < 0 || (isfloat(value) && value >= 2 ^ 64)
        error('actionloop:frame', '%s must be an integer 0..2^64-1 (got %s)', name, num2str(value));
    end
    out = uint64(value);
end
