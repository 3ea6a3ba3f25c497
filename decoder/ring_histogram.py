"""A cumulative latency histogram read off a ``LatencyWindow`` ring, never from the hot path.

The hot thread already records every decided frame's latencies into preallocated rings
(decoder/stats.py). A ``RingHistogram`` takes the values written since its last look, from
another thread (the event loop every half second, and each scrape), and adds them to bucket
counts with numpy: nothing is added per frame. How many values were written meanwhile comes
from the ring's cursor (exact modulo its capacity) and a counter that the hot path already
bumps once per value (``frames_decoded``), which tells how many times the cursor went round.
If more than a ring's worth was written between two looks (4096 by default: seconds of frames
at any rate the daemon reaches) the oldest are gone; they are counted in ``missed``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from decoder.stats import LatencyWindow

# Upper bounds in seconds: the daemon's own share is 0.1-2 ms, frame age can reach seconds.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)


@dataclass(frozen=True)
class HistogramSnapshot:
    bounds_s: tuple[float, ...]
    cumulative: tuple[int, ...]  # one per bound, then +Inf (== count)
    sum_s: float
    count: int
    missed: int


class RingHistogram:
    """Every value a ring records, in fixed buckets. ``harvest`` and ``snapshot`` may be called
    from any threads (a lock keeps them consistent); the ring's writer never takes the lock."""

    def __init__(
        self,
        ring: LatencyWindow,
        recorded: Callable[[], int],
        bounds_s: Sequence[float] = LATENCY_BUCKETS_S,
    ) -> None:
        if list(bounds_s) != sorted(set(bounds_s)) or not bounds_s:
            raise ValueError("bucket bounds must be increasing and distinct")
        self._ring = ring
        self._recorded = recorded  # how many values the ring has been given so far
        self.bounds_s = tuple(float(b) for b in bounds_s)
        self._bounds_ns = np.array([round(b * 1e9) for b in self.bounds_s], dtype=np.int64)
        self._buckets = np.zeros(len(self.bounds_s) + 1, dtype=np.int64)  # the last: above every bound
        self._sum_ns = 0
        self._count = 0
        self._missed = 0
        self._lock = threading.Lock()
        self._cursor = ring.cursor
        self._seen = recorded()

    def harvest(self) -> int:
        """Add what the ring recorded since the last call; returns how many values were added."""
        with self._lock:
            cursor = self._ring.cursor
            seen = self._recorded()
            capacity = self._ring.capacity
            fresh = (cursor - self._cursor) % capacity
            # `seen` may be a value or two ahead of the cursor (read a moment apart, or a frame
            # between its count and its record): rounding to whole turns absorbs that.
            turns = max(0, round((seen - self._seen - fresh) / capacity))
            written = fresh + turns * capacity
            self._cursor, self._seen = cursor, seen
            if written == 0:
                return 0
            taken = min(written, capacity)
            self._missed += written - taken
            values = self._ring.last(taken, cursor)
            self._buckets += np.bincount(np.searchsorted(self._bounds_ns, values, side="left"),
                                         minlength=self._buckets.shape[0])
            self._sum_ns += int(values.sum())
            self._count += taken
            return taken

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            cumulative = np.cumsum(self._buckets)
            return HistogramSnapshot(
                bounds_s=self.bounds_s,
                cumulative=tuple(int(v) for v in cumulative),
                sum_s=self._sum_ns / 1e9,
                count=self._count,
                missed=self._missed,
            )
