function bytes = actionloop_msgpack_encode(value)
%ACTIONLOOP_MSGPACK_ENCODE  msgpack bytes (uint8 row vector) of a MATLAB value.
%   bytes = actionloop_msgpack_encode(value)
%
%   The subset the wire protocol's headers use (docs/wire-protocol.md), in plain MATLAB so that
%   it runs unchanged in MATLAB and GNU Octave:
%     scalar struct            -> map, its field names as keys, in field order
%     char row vector          -> str (UTF-8)
%     cell array               -> array
%     logical scalar           -> bool;   [] (0 x 0) -> nil;  zeros(1, 0) -> empty array
%     int8 ... uint64 scalar   -> int, in the smallest msgpack form (uint64 exact to 2^64-1)
%     double / single scalar   -> float64 / float32 (finite values only)
%     numeric or logical array -> array of its elements (column-major order)
%   Integers must be of an integer class: a double is always sent as a float, as the protocol
%   tells integers and floats apart (wrap seq, shape and timestamps in uint64(...)).
%   bin and ext are never written (the protocol refuses them in headers).

    bytes = encode_value(value);
end

function out = encode_value(value)
    if isstruct(value)
        if ~isscalar(value)
            error('actionloop:msgpack', 'a struct array cannot be encoded (a map is one scalar struct)');
        end
        names = fieldnames(value);
        parts = cell(1, 2 * numel(names));
        for k = 1:numel(names)
            parts{2 * k - 1} = encode_str(names{k});
            parts{2 * k} = encode_value(value.(names{k}));
        end
        out = [container_head(numel(names), uint8(128), uint8(222)), parts{:}];
    elseif ischar(value)
        if ~isempty(value) && size(value, 1) ~= 1
            error('actionloop:msgpack', 'a char matrix cannot be encoded (only a row vector is a string)');
        end
        out = encode_str(value);
    elseif iscell(value)
        parts = cellfun(@encode_value, value(:)', 'UniformOutput', false);
        out = [container_head(numel(value), uint8(144), uint8(220)), parts{:}];
    elseif isnumeric(value) && isequal(size(value), [0 0])
        out = uint8(192);  % nil
    elseif ~isscalar(value) && (isnumeric(value) || islogical(value))
        parts = arrayfun(@encode_value, value(:)', 'UniformOutput', false);
        out = [container_head(numel(value), uint8(144), uint8(220)), parts{:}];
    elseif islogical(value)
        out = uint8(194 + double(value));  % false 0xc2, true 0xc3
    elseif isinteger(value)
        out = encode_int(value);
    elseif isfloat(value)
        if ~isreal(value) || ~isfinite(value)
            error('actionloop:msgpack', 'floats must be finite and real (got %s)', num2str(value));
        end
        if isa(value, 'single')
            out = [uint8(202), big_endian(typecast(value, 'uint8'))];
        else
            out = [uint8(203), big_endian(typecast(double(value), 'uint8'))];
        end
    else
        error('actionloop:msgpack', 'values of class %s cannot be encoded', class(value));
    end
end

function out = container_head(n, fix_base, code16)
    % fixmap/fixarray below 16 elements, else the 16- or 32-bit length form
    if n < 16
        out = uint8(double(fix_base) + n);
    elseif n < 65536
        out = [code16, big_endian(typecast(uint16(n), 'uint8'))];
    else
        out = [code16 + 1, big_endian(typecast(uint32(n), 'uint8'))];
    end
end

function out = encode_str(text)
    utf8 = unicode2native(text, 'UTF-8');
    utf8 = reshape(utf8, 1, []);
    n = numel(utf8);
    if n < 32
        out = [uint8(160 + n), utf8];
    elseif n < 256
        out = [uint8(217), uint8(n), utf8];
    elseif n < 65536
        out = [uint8(218), big_endian(typecast(uint16(n), 'uint8')), utf8];
    else
        out = [uint8(219), big_endian(typecast(uint32(n), 'uint8')), utf8];
    end
end

function out = encode_int(value)
    % compare within 64-bit integer classes only, so that no value passes through a double
    if isa(value, 'uint64') || value >= 0
        u = uint64(value);
        if u < uint64(128)
            out = uint8(u);
        elseif u < uint64(256)
            out = [uint8(204), uint8(u)];
        elseif u < uint64(65536)
            out = [uint8(205), big_endian(typecast(uint16(u), 'uint8'))];
        elseif u < uint64(4294967296)
            out = [uint8(206), big_endian(typecast(uint32(u), 'uint8'))];
        else
            out = [uint8(207), big_endian(typecast(u, 'uint8'))];
        end
    else
        s = int64(value);
        if s >= int64(-32)
            out = typecast(int8(s), 'uint8');
        elseif s >= int64(-128)
            out = [uint8(208), typecast(int8(s), 'uint8')];
        elseif s >= int64(-32768)
            out = [uint8(209), big_endian(typecast(int16(s), 'uint8'))];
        elseif s >= int64(-2147483648)
            out = [uint8(210), big_endian(typecast(int32(s), 'uint8'))];
        else
            out = [uint8(211), big_endian(typecast(s, 'uint8'))];
        end
    end
end

function out = big_endian(little)
    % typecast gives the host's byte order; MATLAB and Octave run on little-endian hosts only
    out = little(end:-1:1);
end
