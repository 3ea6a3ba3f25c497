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
    if depth > 32
        error('actionloop:msgpack', 'nesting deeper than 32 levels at offset %d', pos - 1);
    end
    need(b, pos, 1);
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
            case 202
                value = double(typecast(take(b, pos, 4), 'single'));
                pos = pos + 4;
            case 203
                value = typecast(take(b, pos, 8), 'double');
                pos = pos + 8;
            case {204, 205, 206, 207}  % uint8 .. uint64
                n = 2 ^ (code - 204);
                value = uint64(typecast(take(b, pos, n), unsigned_class(n)));
                pos = pos + n;
            case {208, 209, 210, 211}  % int8 .. int64
                n = 2 ^ (code - 208);
                value = int64(typecast(take(b, pos, n), signed_class(n)));
                if value >= 0
                    value = uint64(value);
                end
                pos = pos + n;
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
        [key, pos] = decode_at(b, pos, depth + 1);
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
    need(b, pos, n);  % every element takes at least one byte: refuse absurd lengths early
    items = cell(1, n);
    for k = 1:n
        [items{k}, pos] = decode_at(b, pos, depth + 1);
    end
    if n == 0
        value = zeros(1, 0);  % not [], which is nil
    elseif all(cellfun(@(x) (isnumeric(x) || islogical(x)) && isscalar(x), items)) && ...
            all(strcmp(cellfun(@class, items, 'UniformOutput', false), class(items{1})))
        value = [items{:}];
    else
        value = items;
    end
end

function [value, pos] = decode_str(b, pos, n)
    raw = take_raw(b, pos, n);
    if n == 0
        value = '';
    else
        value = native2unicode(raw, 'UTF-8');
        value = reshape(value, 1, []);
    end
    pos = pos + n;
end

function [n, pos] = length_at(b, pos, width)
    n = double(typecast(take(b, pos, width), unsigned_class(width)));
    pos = pos + width;
end

function out = take(b, pos, n)
    % n bytes at pos in host (little-endian) order, ready for typecast
    out = fliplr(take_raw(b, pos, n));
end

function out = take_raw(b, pos, n)
    need(b, pos, n);
    out = b(pos:pos + n - 1);
end

function need(b, pos, n)
    if pos + n - 1 > numel(b)
        error('actionloop:msgpack', 'truncated: %d byte(s) needed at offset %d, %d left', ...
              n, pos - 1, max(0, numel(b) - pos + 1));
    end
end

function name = unsigned_class(n)
    names = {'uint8', 'uint16', '', 'uint32', '', '', '', 'uint64'};
    name = names{n};
end

function name = signed_class(n)
    names = {'int8', 'int16', '', 'int32', '', '', '', 'int64'};
    name = names{n};
end
