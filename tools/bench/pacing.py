"""Pacing of a replay: how fast to publish, and a pacer that keeps absolute deadlines.

`recorded` (the recording's own frame intervals), `Nx` (compressed N times), `Nfps` (a fixed
rate) or `max` (lock-step: the next frame when the previous action came back). Deadlines are
absolute (start time + offset of frame i): a late frame does not push the later ones back, and
the pacer sleeps (never spins) until each one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

RateKind = Literal["recorded", "speed", "fps", "max"]
_RATE_RE = re.compile(r"^\s*(?P<value>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>x|fps)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class RateSpec:
    """How fast to publish: `recorded`, `Nx` speed-up, a fixed `Nfps`, or `max`."""

    kind: RateKind
    value: float = 1.0

    @classmethod
    def parse(cls, text: str) -> RateSpec:
        """`recorded`, `max`, `2x`, `0.5x`, `300fps`; a bare number means frames per second."""
        lowered = text.strip().lower()
        if lowered == "recorded":
            return cls("recorded")
        if lowered == "max":
            return cls("max")
        match = _RATE_RE.match(lowered)
        if match is None:
            raise ValueError(f"rate {text!r} is not one of: recorded, max, Nx (e.g. 2x), Nfps (e.g. 300fps)")
        value = float(match["value"])
        if not 0 < value < 1e6:
            raise ValueError(f"rate {text!r} must be positive and below 1e6")
        unit = (match["unit"] or "fps").lower()
        return cls("speed" if unit == "x" else "fps", value)

    def __str__(self) -> str:
        if self.kind == "speed":
            return f"{self.value:g}x"
        if self.kind == "fps":
            return f"{self.value:g}fps"
        return self.kind


def schedule_offsets_ns(rate: RateSpec, frame_times_s: np.ndarray) -> np.ndarray | None:
    """Publish time of each frame relative to the first, in ns; None for `max` (no schedule).

    `frame_times_s` are the recording's acquisition times (monotonic seconds).
    """
    n = len(frame_times_s)
    if rate.kind == "max":
        return None
    if rate.kind == "fps":
        return np.round(np.arange(n, dtype=np.float64) * (1e9 / rate.value)).astype(np.int64)
    times = np.asarray(frame_times_s, dtype=np.float64)
    if n and (not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0)):
        raise ValueError("the recording's frame times are not finite and non-decreasing")
    speed = rate.value if rate.kind == "speed" else 1.0
    relative = (times - times[0]) if n else times
    return np.round(relative * (1e9 / speed)).astype(np.int64)


class DeadlinePacer:
    """Waits for absolute deadlines `start + offset[i]`: lateness never accumulates (no drift).

    `clock` returns ns and `sleep` takes seconds; both are injectable so tests can use a fake
    clock. `wait(i)` returns how late (ns, >= 0) the call returned relative to deadline i.
    """

    def __init__(
        self,
        offsets_ns: np.ndarray,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.offsets_ns = np.asarray(offsets_ns, dtype=np.int64)
        self._clock = clock
        self._sleep = sleep
        self.start_ns: int | None = None

    def start(self, start_ns: int | None = None) -> int:
        self.start_ns = self._clock() if start_ns is None else start_ns
        return self.start_ns

    def deadline_ns(self, i: int) -> int:
        if self.start_ns is None:
            raise RuntimeError("DeadlinePacer.start() was not called")
        return self.start_ns + int(self.offsets_ns[i])

    def wait(self, i: int) -> int:
        deadline = self.deadline_ns(i)
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                return -remaining
            self._sleep(remaining / 1e9)
