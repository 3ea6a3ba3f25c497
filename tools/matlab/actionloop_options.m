function opts = actionloop_options(opts, args)
%ACTIONLOOP_OPTIONS  Name/value pairs ARGS over the defaults in struct OPTS (unknown names are errors).
    if mod(numel(args), 2) ~= 0
        error('actionloop:options', 'options come in name/value pairs');
    end
    for k = 1:2:numel(args)
        name = args{k};
        if ~ischar(name) || ~isfield(opts, name)
            error('actionloop:options', 'unknown option %s (known: %s)', num2str(name), ...
                  strjoin(fieldnames(opts)', ', '));
        end
        opts.(name) = args{k + 1};
    end
end
