function t = actionloop_clock_ns(pub)
%ACTIONLOOP_CLOCK_NS  Nanoseconds (uint64) of the publisher's clock: time since actionloop_publisher.
%   MATLAB's tic/toc is a high-resolution monotonic counter; Octave's follows the system
%   clock (gettimeofday), so a clock step (NTP) shows as a jump in the frames' timestamps.
    t = uint64(round(toc(pub.clock) * 1e9));
end
