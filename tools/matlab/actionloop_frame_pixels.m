function [bytes, shape, dtype] = actionloop_frame_pixels(pixels, layout)
%ACTIONLOOP_FRAME_PIXELS  The wire bytes (row-major, little-endian), shape and dtype of a frame.
%   [bytes, shape, dtype] = actionloop_frame_pixels(frame)              frame: height x width
%   [bytes, shape, dtype] = actionloop_frame_pixels(frameT, 'rowmajor') frameT: width x height,
%       i.e. already in row-major memory order (ScanImage's transposed imageData): no copy
%
%   Pixel types follow the importers' rule (protocols/pixels.py), so live frames match the
%   training data: uint16 and single as they are; uint8 widened to uint16; int8, int16
%   (ScanImage's default) and double as single (float32; exact for int8/int16).

    if nargin < 2
        layout = 'matlab';
    end
    if ~(isnumeric(pixels) && isreal(pixels)) || ndims(pixels) ~= 2 || isempty(pixels)
        error('actionloop:frame', 'a frame is a non-empty real 2-D numeric matrix (got %s %s)', ...
              mat2str(size(pixels)), class(pixels));
    end
    switch class(pixels)
        case 'uint16'
            dtype = 'uint16';
        case 'single'
            dtype = 'float32';
        case 'uint8'
            pixels = uint16(pixels);
            dtype = 'uint16';
        case {'int8', 'int16', 'double'}
            pixels = single(pixels);
            dtype = 'float32';
        otherwise
            error('actionloop:frame', 'pixels of class %s: accepted uint8, uint16, int8, int16, single, double', ...
                  class(pixels));
    end
    switch layout
        case 'matlab'
            shape = size(pixels);
            pixels = pixels.';  % MATLAB is column-major; the wire is row-major
        case 'rowmajor'
            shape = fliplr(size(pixels));
        otherwise
            error('actionloop:frame', 'layout must be matlab or rowmajor (got %s)', layout);
    end
    bytes = typecast(reshape(pixels, 1, []), 'uint8');
    if numel(bytes) > 67108864
        error('actionloop:frame', 'a frame is at most 64 MiB (this one is %d bytes)', numel(bytes));
    end
end
