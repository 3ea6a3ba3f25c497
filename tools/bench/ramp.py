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


def ramp_rates(start_fps: float, max_fps: float, must_include: Sequence[float] = (300.0, 1000.0)) -> list[float]:
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
        self.in_memory = data.in_memory  # views of preloaded frames: nothing to read

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._data.frames[i % len(self._data)]


def cycled(data: ReplayData, n: int) -> ReplayData:
    return ReplayData(frames=_Cycled(data, n), times_s=np.arange(n, dtype=np.float64), name=data.name,
                      _owners=[])


def explain_ramp(steps: Sequence[dict[str, Any]], sustained: float | None, max_fps: float) -> str:
    """Where and why the ramp stopped, from the first failing step's own numbers."""
    if not steps:
        return "ramp not run"
    failed = next((s for s in steps if not s["ok"]), None)
    if failed is None:
        return f"no skip up to the highest rate tried, {max_fps:g} frames/s"
    rate = failed["rate_fps"]
    f = failed["frames"]
    where = (f"skips begin between {sustained:g} and {rate:g} frames/s" if sustained is not None
             else f"frames skipped already at {rate:g} frames/s, the lowest rate tried")
    if not failed.get("publisher_kept_pace", True):
        return (f"{where}: the replay itself could not send {rate:g} frames/s (achieved "
                f"{failed['achieved_fps']:g}, pacing late by p99 {_us(failed.get('publisher_late_p99_us'))}), so the "
                "limit there is the sender sharing the CPUs, not the daemon")
    interval_us = 1e6 / rate
    slowest = failed.get("daemon_max_us")
    bursts = failed.get("publisher_bursts", 0)
    if slowest is not None and slowest < interval_us and bursts:
        return (f"{where}: at {rate:g} frames/s (one frame every {interval_us:.0f} us) the daemon skipped "
                f"{f['skipped']} and lost {f['lost']} of {f['sent']} frames although its slowest receive -> "
                f"publish ({_us(slowest)}; p50 {_us(failed.get('daemon_p50_us'))}, inference p50 "
                f"{_us(failed.get('daemon_infer_p50_us'))}) was shorter than a frame interval: the replay, "
                f"late by p99 {_us(failed.get('publisher_late_p99_us'))} on the shared CPUs, sent {bursts} frames "
                "less than half an interval after the previous one, and two frames that arrive within one "
                "decision are one decoded, one skipped (latest-wins)")
    return (f"{where}: at {rate:g} frames/s (one frame every {interval_us:.0f} us) the daemon skipped "
            f"{f['skipped']} and lost {f['lost']} of {f['sent']} frames while the replay kept pace; its receive -> "
            f"publish took p50 {_us(failed.get('daemon_p50_us'))}, p99 {_us(failed.get('daemon_p99_us'))}, max "
            f"{_us(failed.get('daemon_max_us'))} (inference p50 {_us(failed.get('daemon_infer_p50_us'))}), so it "
            "keeps up on average, and every stall longer than about one frame interval (the replay, the "
            "daemon and ZeroMQ's I/O threads share the CPUs) lets two frames queue, of which latest-wins "
            "decodes the newer and skips the older")


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} us"
