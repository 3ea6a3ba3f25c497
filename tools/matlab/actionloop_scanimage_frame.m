function [pixels, layout, frame_number, timestamp_s] = actionloop_scanimage_frame(hSI, channel)
%ACTIONLOOP_SCANIMAGE_FRAME  ScanImage's last acquired frame of one channel, ready to publish.
%   [pixels, layout, frame_number, timestamp_s] = actionloop_scanimage_frame(hSI, 1)
%   channel: ScanImage's channel number (1-based, as in hSI.hChannels.channelSave).
%   frame_number counts frames from 1 since GRAB/LOOP started (frameNumberAcqMode);
%   timestamp_s is ScanImage's frameTimestamp (seconds since the acquisition started).
%
%   Reads hSI.hDisplay.lastStripeData (ScanImage's StripeData of the last frame: roiData{1},
%   its channels and imageData{channel index}{z index}). ScanImage keeps that image transposed
%   (roiData.transposed), which is row-major order already: it is published without a copy
%   (layout 'rowmajor'). Only the first ROI and the first z are published (no multi-ROI or
%   volume splitting here). Where lastStripeData is missing the documented public properties
%   hDisplay.lastFrame (one image per displayed channel, hChannels.channelDisplay),
%   lastFrameNumber and lastFrameTimestamp are used instead.

    display = hSI.hDisplay;
    stripe = [];
    try
        stripe = display.lastStripeData;
    catch %#ok<CTCH>  % a ScanImage version without it: fall back to the public properties
    end
    if ~isempty(stripe) && ~isempty(stripe.roiData)
        roi = stripe.roiData{1};
        index = find(roi.channels == channel, 1);
        if isempty(index)
            error('actionloop:scanimage', 'channel %d is not acquired (channels: %s)', channel, mat2str(roi.channels));
        end
        pixels = roi.imageData{index}{1};
        if roi.transposed
            layout = 'rowmajor';
        else
            layout = 'matlab';
        end
        frame_number = stripe.frameNumberAcqMode;
        timestamp_s = stripe.frameTimestamp;
    else
        index = find(hSI.hChannels.channelDisplay == channel, 1);
        if isempty(index)
            error('actionloop:scanimage', 'channel %d is not displayed (channelDisplay: %s)', channel, ...
                  mat2str(hSI.hChannels.channelDisplay));
        end
        frames = display.lastFrame;
        pixels = frames{index};
        layout = 'matlab';
        frame_number = display.lastFrameNumber;
        timestamp_s = display.lastFrameTimestamp;
    end
end
