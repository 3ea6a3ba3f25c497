"""Acquisition times on this host's monotonic clock, from the microscope's own frame times.

The microscope says when each frame was taken relative to its own start (ScanImage's
``frameTimestamps_sec``, or frame index / stated rate); the bridge sees each frame some time
after it was taken (the writer's buffering, the file system, the polling interval). The
offset between the two clocks is estimated as the smallest (seen - taken) over the last few
seconds: the frame that reached the bridge fastest bounds the delay best. So

    t_acq = offset + taken, and t_acq <= the time the bridge saw the frame, always.

The window lets the estimate follow a slow drift between the microscope's clock and this
host's. A sudden increase of (seen - taken) by more than `restart_s` means the acquisition
started again (a new acquisition restarts ScanImage's timestamps at 0) or paused: the window
starts over from that frame.
"""

from __future__ import annotations

from collections import deque


class AcquisitionClock:
    def __init__(self, window_s: float = 5.0, restart_s: float = 0.5) -> None:
        self.window_ns = int(window_s * 1e9)
        self.restart_ns = int(restart_s * 1e9)
        self._candidates: deque[tuple[int, int]] = deque()  # (seen_ns, seen - taken), increasing
        self.restarts = 0

    def acquired_ns(self, taken_s: float, seen_ns: int) -> int:
        """Acquisition time of a frame taken `taken_s` after the microscope's start, seen at `seen_ns`."""
        taken_ns = round(taken_s * 1e9)
        sample = seen_ns - taken_ns
        window = self._candidates
        if window and sample - window[0][1] > self.restart_ns:
            window.clear()
            self.restarts += 1
        while window and window[-1][1] >= sample:
            window.pop()
        window.append((seen_ns, sample))
        while window[0][0] < seen_ns - self.window_ns:
            window.popleft()
        return max(0, window[0][1] + taken_ns)
