function value = actionloop_msgpack_decode(bytes)
%ACTIONLOOP_MSGPACK_DECODE  The MATLAB value of one msgpack object (the whole of BYTES).
%   value = actionloop_msgpack_decode(bytes)
%
%   Plain MATLAB, runs unchanged in MATLAB and GNU Octave. What comes back:
%     map    -> scalar struct (keys must be strings; a key that is not a valid MATLAB name
%               goes through matlab.lang.makeValidName)
%     array  -> row vector when every element is a numeric or logical scalar of one class
%               (probs -> double, shape -> uint64), else a cell row; zeros(1, 0) if empty
%     str    -> char row (UTF-8 decoded)
%     int    -> uint64 (0 and up) or int64 (negative): seq, ids and nanosecond timestamps
%               stay exact up to 2^64-1 (subtract them before converting to double)
%     float  -> double;  bool -> logical;  nil -> []
%   bin and ext types, truncated input and bytes left over after the object are errors
%   (identifier 'actionloop:msgpack') naming the problem and the byte offset.

    if ~isa(bytes, 'uint8')
        error('actionloop:msgpack', 'expected uint8 bytes, got %s', class(bytes));
    end
    bytes = reshape(bytes, 1, []);
    [value, pos] = decode_at(bytes, 1, 0);
    if pos <= numel(bytes)
        error('actionloop:msgpack', '%d byte(s) left over after the object at offset %d', ...
              numel(bytes) - pos + 1, pos - 1);
    end
end

function [value, pos] = decode_at(b, pos, depth)
    % few function calls per value: they are what costs time in Octave's interpreter
    if depth > 32
        error('actionloop:msgpack', 'nesting deeper than 32 levels at offset %d', pos - 1);
    end
    if pos > numel(b)
        truncated(b, pos, 1);
    end
    code = double(b(pos));
    pos = pos + 1;
    if code < 128                      % positive fixint
        value = uint64(code);
    elseif code < 144                  % fixmap
        [value, pos] = decode_map(b, pos, code - 128, depth);
    elseif code < 160                  % fixarray
        [value, pos] = decode_array(b, pos, code - 144, depth);
    elseif code < 192                  % fixstr
        [value, pos] = decode_str(b, pos, code - 160);
    elseif code >= 224                 % negative fixint
        value = int64(code - 256);
    else
        switch code
            case 192
                value = [];
            case 194
                value = false;
            case 195
                value = true;
            case {196, 197, 198, 199, 200, 201, 212, 213, 214, 215, 216}
                error('actionloop:msgpack', 'msgpack bin/ext (0x%02x) at offset %d: not used in headers', code, pos - 2);
            case {202, 203, 204, 205, 206, 207, 208, 209, 210, 211}  % float32/64, uint8..64, int8..64
                k = code - 201;
                widths = [4 8 1 2 4 8 1 2 4 8];
                classes = {'single', 'double', 'uint8', 'uint16', 'uint32', 'uint64', 'int8', 'int16', 'int32', 'int64'};
                value = typecast(take(b, pos, widths(k)), classes{k});
                pos = pos + widths(k);
                if code < 204
                    value = double(value);
                elseif code < 208 || value >= 0
                    value = uint64(value);  % 0 and up: uint64, whichever form it was sent in
                else
                    value = int64(value);
                end
            case {217, 218, 219}       % str8, str16, str32
                [n, pos] = length_at(b, pos, 2 ^ (code - 217));
                [value, pos] = decode_str(b, pos, n);
            case {220, 221}            % array16, array32
                [n, pos] = length_at(b, pos, 2 * (code - 219));
                [value, pos] = decode_array(b, pos, n, depth);
            case {222, 223}            % map16, map32
                [n, pos] = length_at(b, pos, 2 * (code - 221));
                [value, pos] = decode_map(b, pos, n, depth);
            otherwise                  % 0xc1 is never used
                error('actionloop:msgpack', 'invalid msgpack type byte 0x%02x at offset %d', code, pos - 2);
        end
    end
end

function [value, pos] = decode_map(b, pos, n, depth)
    value = struct();
    for k = 1:n
        key_at = pos - 1;
        if pos <= numel(b) && b(pos) >= 160 && b(pos) < 192  % a fixstr, as keys are: one call less
            [key, pos] = decode_str(b, pos + 1, double(b(pos)) - 160);
        else
            [key, pos] = decode_at(b, pos, depth + 1);
        end
        if ~ischar(key)
            error('actionloop:msgpack', 'map key at offset %d is not a string', key_at);
        end
        if ~isvarname(key)
            key = matlab.lang.makeValidName(key);
        end
        [value.(key), pos] = decode_at(b, pos, depth + 1);
    end
end

function [value, pos] = decode_array(b, pos, n, depth)
    if pos + n - 1 > numel(b)  % every element takes at least one byte: refuse absurd lengths early
        truncated(b, pos, n);
    end
    items = cell(1, n);
    uniform = true;  % every element a numeric or logical scalar of the first one's class
    for k = 1:n
        [items{k}, pos] = decode_at(b, pos, depth + 1);
        uniform = uniform && (isnumeric(items{k}) || islogical(items{k})) && isscalar(items{k}) ...
                  && isa(items{k}, class(items{1}));
    end
    if n == 0
        value = zeros(1, 0);  % not [], which is nil
    elseif uniform
        value = [items{:}];
    else
        value = items;
    end
end

function [value, pos] = decode_str(b, pos, n)
    last = pos + n - 1;
    if last > numel(b)
        truncated(b, pos, n);
    end
    raw = b(pos:last);
    pos = last + 1;
    if all(raw < 128)
        value = char(raw);  % ASCII, the usual case: no conversion needed
    else
        value = reshape(native2unicode(raw, 'UTF-8'), 1, []);
    end
end

function [n, pos] = length_at(b, pos, width)
    names = {'uint8', 'uint16', '', 'uint32'};
    n = double(typecast(take(b, pos, width), names{width}));
    pos = pos + width;
end

function out = take(b, pos, n)
    % n bytes at pos, reversed into host (little-endian) order for typecast
    last = pos + n - 1;
    if last > numel(b)
        truncated(b, pos, n);
    end
    out = b(last:-1:pos);
end

function truncated(b, pos, n)
    error('actionloop:msgpack', 'truncated: %d byte(s) needed at offset %d, %d left', ...
          n, pos - 1, max(0, numel(b) - pos + 1));
end
