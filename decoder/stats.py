"""Counters and rolling latency percentiles for status messages and the periodic summary.

Recording is O(1) and allocation-free (a preallocated ring of int64 nanoseconds); percentiles
are computed only when someone asks (status request, heartbeat, summary line).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


class LatencyWindow:
    """The last ``capacity`` latencies in nanoseconds."""

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._values = np.zeros(capacity, dtype=np.int64)
        self._next = 0
        self._count = 0
        self.max_ns = 0

    def record(self, latency_ns: int) -> None:
        self._values[self._next] = latency_ns
        self._next = (self._next + 1) % self._values.shape[0]
        if self._count < self._values.shape[0]:
            self._count += 1
        if latency_ns > self.max_ns:
            self.max_ns = latency_ns

    def __len__(self) -> int:
        return self._count

    # Read-only views for readers on other threads (decoder/ring_histogram.py); ``record`` is
    # the only writer and these add nothing to it.
    @property
    def capacity(self) -> int:
        return int(self._values.shape[0])

    @property
    def cursor(self) -> int:
        """Where the next value will be written (advances after each value is stored)."""
        return self._next

    def last(self, count: int, end: int) -> np.ndarray:
        """A copy of the ``count`` values before position ``end`` (count <= capacity), oldest first."""
        return self._values.take(np.arange(end - count, end), mode="wrap")

    def percentiles_us(self) -> dict[str, float]:
        """``{"p50_us", "p90_us", "p99_us", "p999_us", "max_us"}`` over the window (empty: {})."""
        if self._count == 0:
            return {}
        values = self._values[: self._count]
        p = np.percentile(values, PERCENTILES)
        return {
            "p50_us": round(float(p[0]) / 1e3, 1),
            "p90_us": round(float(p[1]) / 1e3, 1),
            "p99_us": round(float(p[2]) / 1e3, 1),
            "p999_us": round(float(p[3]) / 1e3, 1),
            "max_us": round(float(values.max()) / 1e3, 1),
        }

    def clear(self) -> None:
        # Not used by the daemon: a RingHistogram following the cursor would miscount after it.
        self._next = 0
        self._count = 0
        self.max_ns = 0


@dataclass(slots=True)
class Counters:
    """Everything the daemon counts since it started. Plain ints: cheap to bump on the hot path."""

    frames_received: int = 0  # well-formed frames accepted by the receive task
    frames_decoded: int = 0  # frames that went through the model (an action was published)
    frames_skipped: int = 0  # replaced in the latest-frame slot by a newer frame before decoding
    frames_lost: int = 0  # missing upstream: holes in the sequence numbers as received
    frames_paused: int = 0  # received while paused (not decoded)
    window_resets: int = 0  # large gaps, publisher restarts, resumes and model swaps
    sequence_restarts: int = 0  # sequence number went backwards: the publisher restarted
    malformed_messages: int = 0  # not a frame message at all (ProtocolError)
    wrong_shape_frames: int = 0  # well-formed but not the model's shape/dtype
    non_finite_frames: int = 0  # float frames holding NaN or inf
    frames_age_negative: int = 0  # decided frames stamped after their action (the clock is not shared)
    actions_published: int = 0
    events_published: int = 0
    status_published: int = 0
    control_requests: int = 0  # every control message read, including those refused as busy
    control_errors: int = 0  # malformed or refused requests (not counting busy ones)
    control_refused_busy: int = 0  # over the control rate limit: answered "busy", not carried out
    auth_failures: int = 0  # refused CURVE handshakes on any socket (unknown key, no CURVE, wrong server key)
    reloads: int = 0
    reloads_refused: int = 0
    output_writes: int = 0  # bytes written to TTL output devices (line changes and all-low; decoder/outputs/)
    output_lost: int = 0  # line changes not written: the device was down or the write failed
    output_failures: int = 0  # writes that failed on an open device (unplugged, stopped reading)
    output_reopens: int = 0  # devices opened again after a failure or a missing device

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class RateLimiter:
    """Says yes at most once per ``interval_s`` per key, and how many were held back meanwhile."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None: stay quiet. An int: log now; it is the number of occurrences held back since last time."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)
