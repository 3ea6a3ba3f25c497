"""The throughput ramp: rates raised step by step until the daemon skips or loses a frame.

A step passes when the daemon decoded every frame (zero skipped, zero lost) and the replay
itself kept the pace (a publisher that cannot send fast enough says nothing about the daemon).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tools.bench.frames import ReplayData


def find_sustained_rate(run_at: Callable[[float], tuple[bool, dict[str, Any]]], rates: Sequence[float],
                        refine: int = 2) -> tuple[float | None, list[dict[str, Any]]]:
    """Walk up `rates` until a step fails, then bisect `refine` times between the last rate that
    passed and the first that failed. Returns the highest passing rate (None if none) and every
    step's record. A step passes when `run_at(rate)` says so (zero skipped, zero lost)."""
    steps: list[dict[str, Any]] = []
    best: float | None = None
    failed: float | None = None
    for rate in rates:
        ok, record = run_at(rate)
        steps.append({"rate_fps": rate, "ok": ok, **record})
        if not ok:
            failed = rate
            break
        best = rate
    if failed is not None and best is not None:
        lo, hi = best, failed
        for _ in range(refine):
            mid = round((lo + hi) / 2)
            if mid <= lo or mid >= hi:
                break
            ok, record = run_at(mid)
            steps.append({"rate_fps": float(mid), "ok": ok, **record})
            if ok:
                lo = best = float(mid)
            else:
                hi = float(mid)
    return best, steps

def ramp_rates(start_fps: float, max_fps: float, must_include: Sequence[float] = (300.0,)) -> list[float]:
    """The base rate, then doubling rates up to `max_fps`, plus the target rates on the way."""
    rates: set[float] = set()
    rate = start_fps
    while rate <= max_fps:
        rates.add(float(rate))
        rate *= 2
    rates.update(float(r) for r in must_include if start_fps < r <= max_fps)
    return sorted(rates)

class _Cycled:
    """Frames of `data` repeated to any length (the throughput ramp needs more than a trial)."""

    def __init__(self, data: ReplayData, n: int) -> None:
        self._data, self._n = data, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._data.frames[i % len(self._data)]

def cycled(data: ReplayData, n: int) -> ReplayData:
    return ReplayData(frames=_Cycled(data, n), times_s=np.arange(n, dtype=np.float64), name=data.name,
                      _owners=[])
