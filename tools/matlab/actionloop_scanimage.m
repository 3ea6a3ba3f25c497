function varargout = actionloop_scanimage(src, evt, endpoint, channel, session)
%ACTIONLOOP_SCANIMAGE  ScanImage user function: publish every acquired frame to the decoder.
%   Add it for ScanImage's frameAcquired event (and, optionally, acqModeStart and
%   applicationWillClose), e.g. in the ScanImage command window:
%
%     hSI.hUserFunctions.userFunctionsCfg(end+1) = struct('EventName', 'frameAcquired', ...
%         'UserFcnName', 'actionloop_scanimage', ...
%         'Arguments', {{'tcp://127.0.0.1:5555', 1, 'rig2'}}, 'Enable', true);
%
%   Arguments (all optional): endpoint to bind (default tcp://127.0.0.1:5555; the daemon
%   connects, its default), ScanImage channel number (default 1), session id (default '').
%   actionloop_scanimage('wait', 10) waits up to 10 s for the daemon to subscribe (once the
%   publisher is open, e.g. after acqModeStart); ok = actionloop_scanimage('wait', 10) says whether it did.
%   actionloop_scanimage('close') closes the socket (also done on applicationWillClose).
%
%   seq is ScanImage's frame number in the GRAB/LOOP minus one: a frame ScanImage did not
%   hand to user functions (MATLAB busy) shows in the daemon as dropped, and a new GRAB starts
%   again at 0 (the daemon counts a restart). t_acq_ns is ScanImage's frame timestamp put on
%   the publisher's clock by the smallest (arrival - timestamp) offset seen in this GRAB, so it
%   is never later than the frame's arrival here.

    persistent pub opened_with offset_s last_number
    if ischar(src) && strcmp(src, 'wait')
        if isempty(pub)
            error('actionloop:scanimage', 'no publisher yet: it opens at the first ScanImage event');
        end
        [ok, pub] = actionloop_wait_subscriber(pub, evt);
        varargout = {ok};
        return
    end
    closing = ischar(src) && strcmp(src, 'close');
    if closing || strcmp(evt.EventName, 'applicationWillClose')
        if ~isempty(pub)
            actionloop_close(pub);
            pub = [];
        end
        return
    end
    if nargin < 3 || isempty(endpoint)
        endpoint = 'tcp://127.0.0.1:5555';
    end
    if nargin < 4 || isempty(channel)
        channel = 1;
    end
    if nargin < 5
        session = '';
    end
    event = evt.EventName;
    settings = sprintf('%s|%d|%s', endpoint, channel, session);
    if isempty(pub) || ~strcmp(opened_with, settings)
        if ~isempty(pub)
            actionloop_close(pub);  % the arguments changed: reopen with the new ones
        end
        pub = actionloop_publisher(endpoint, 'session', session);
        opened_with = settings;
        last_number = Inf;
    end
    if strcmp(event, 'acqModeStart')
        last_number = Inf;  % a new GRAB/LOOP: ScanImage's timestamps start again
        return
    end
    if ~strcmp(event, 'frameAcquired')
        return
    end
    if (isstruct(src) && isfield(src, 'hSI')) || (isobject(src) && isprop(src, 'hSI'))
        hSI = src.hSI;  % src is ScanImage's UserFunctions component (the event's source)
    else
        hSI = src;      % or the ScanImage object itself
    end
    [pixels, layout, number, timestamp_s] = actionloop_scanimage_frame(hSI, channel);
    if number == last_number
        return  % the same frame again: published already
    end
    now_s = toc(pub.clock);
    if number < last_number || now_s - timestamp_s < offset_s
        offset_s = now_s - timestamp_s;  % new acquisition (number went back) or a faster frame
    end
    last_number = number;
    t_acq_ns = uint64(round(max(0, timestamp_s + offset_s) * 1e9));
    pub = actionloop_publish(pub, pixels, 'seq', uint64(number - 1), 't_acq_ns', t_acq_ns, ...
                             'layout', layout, 'channel', channel - 1);
end
