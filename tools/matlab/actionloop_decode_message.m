function [topic, msg, reason] = actionloop_decode_message(parts, format)
%ACTIONLOOP_DECODE_MESSAGE  One published message (cell of uint8 parts) as (topic, struct).
%   [topic, msg, reason] = actionloop_decode_message(parts, 'msgpack')   or 'json'
%   reason is '' for a valid message, else why it was refused (then topic is '' and msg []);
%   never an error, so that a subscriber loop survives any bytes a publisher sends.
%   The checks are the protocol's common rules a client relies on: two parts, a known topic,
%   a header of at most 65,536 bytes holding one map, v == 1 and the topic's required keys.

    topic = '';
    msg = [];
    reason = '';
    required = struct( ...
        'action', {{'v', 'seq', 't_acq_ns', 't_recv_ns', 't_done_ns', 't_pub_ns', 'state', 'action', ...
                    'index', 'probs', 'confidence', 'model_id'}}, ...
        'event', {{'v', 'kind', 'action', 'index', 'seq', 't_acq_ns', 't_pub_ns', 'confidence', 'model_id'}}, ...
        'status', {{'v', 't_ns', 'state', 'uptime_s', 'model_id', 'backend', 'window', 'window_fill'}});
    if numel(parts) ~= 2
        reason = sprintf('expected 2 message parts, got %d', numel(parts));
        return
    end
    name = char(parts{1});
    if ~isfield(required, name)
        reason = sprintf('unknown topic %s', name);
        return
    end
    if numel(parts{2}) > 65536
        reason = sprintf('%s header: more than 65536 bytes', name);
        return
    end
    try
        if strcmp(format, 'json')
            decoded = jsondecode(native2unicode(parts{2}, 'UTF-8'));
        else
            decoded = actionloop_msgpack_decode(parts{2});
        end
    catch err
        reason = sprintf('%s header: %s', name, err.message);
        return
    end
    if ~isstruct(decoded) || ~isscalar(decoded)
        reason = sprintf('%s header: not a map', name);
        return
    end
    missing = required.(name)(~isfield(decoded, required.(name)));
    if ~isempty(missing)
        reason = sprintf('%s header: missing %s', name, strjoin(missing, ', '));
        return
    end
    if ~isscalar(decoded.v) || ~isnumeric(decoded.v) || decoded.v ~= 1
        reason = sprintf('%s header: schema version v must be 1', name);
        return
    end
    topic = name;
    msg = decoded;
end
