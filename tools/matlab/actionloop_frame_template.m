function template = actionloop_frame_template(shape, dtype, channel, plane, session)
%ACTIONLOOP_FRAME_TEMPLATE  The msgpack frame header with seq, t_acq_ns and t_pub_ns left open.
%   template = actionloop_frame_template([512 512], 'uint16', 0, 0, '')
%   template.bytes is the header of docs/wire-protocol.md ("frame") with those three values
%   written as 8-byte msgpack uint64 (valid msgpack, if not the shortest form) at template.slots,
%   so that a frame costs three 8-byte writes instead of encoding the whole map again.

    if numel(shape) ~= 2 || any(shape < 1) || any(shape > 16384) || any(shape ~= round(shape))
        error('actionloop:frame', 'frame shape must be [height width], each 1..16384 (got %s)', mat2str(shape));
    end
    if ~any(strcmp(dtype, {'uint8', 'uint16', 'float32'}))
        error('actionloop:frame', 'dtype must be uint8, uint16 or float32 (got %s)', dtype);
    end
    if channel < 0 || channel > 255 || channel ~= round(channel)
        error('actionloop:frame', 'channel must be an integer 0..255 (got %g)', channel);
    end
    if plane < 0 || plane > 4095 || plane ~= round(plane)
        error('actionloop:frame', 'plane must be an integer 0..4095 (got %g)', plane);
    end
    if ~ischar(session) || numel(session) > 128
        error('actionloop:frame', 'session must be a string of at most 128 characters');
    end
    uint64_code = uint8(207);
    slot = zeros(1, 8, 'uint8');
    rest = actionloop_msgpack_encode(struct('shape', {{uint64(shape(1)), uint64(shape(2))}}, ...
        'dtype', dtype, 'channel', uint64(channel), 'plane', uint64(plane), 'session', session));
    head = [uint8(128 + 9), actionloop_msgpack_encode('v'), uint8(1), actionloop_msgpack_encode('seq'), uint64_code];
    acq = [actionloop_msgpack_encode('t_acq_ns'), uint64_code];
    published = [actionloop_msgpack_encode('t_pub_ns'), uint64_code];
    template.bytes = [head, slot, acq, slot, published, slot, rest(2:end)];  % rest(1): its own map head
    first = numel(head) + 1;
    second = first + 8 + numel(acq);
    template.slots = [first, second, second + 8 + numel(published)];
    template.key = sprintf('%d %d %s %d %d %s', shape(1), shape(2), dtype, channel, plane, session);
end
