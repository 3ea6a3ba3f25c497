"""Overload: the daemon fed at 2x, 10x and 100x the rate it sustains without a skip.

What a rig gets when frames come faster than the daemon decodes (issue 14, finding 7): the
daemon decodes the newest frame and skips the rest (latest wins), and skipped frames are not
gaps, so decisions should keep coming, each flagged as degraded by its `skipped` count. Per
step, from the replay's raw stamps (tools/bench/replay.py; frames preloaded, a receiver that
only stamps):

- `with_class`: the fraction of actions that carry a class (`state` decoding, not `filling`);
- `degraded`: the fraction of actions decided over a sparser window (`skipped` > 0);
- `decisions_per_s`: actions received per second of sending;
- `age`: the decided frame's age when its action went out, action `t_pub_ns` (daemon) minus the
  frame's `t_pub_ns` (the replay's stamp; same host, same monotonic clock): time in the
  socket queues plus the daemon's own time;
- frames skipped (the daemon's counter over the step) and lost (sent, neither decoded nor
  skipped: dropped on the way, at one of ZeroMQ's high-water marks), the daemon's window resets
  (one at the step's start: each step starts a new sequence) and its own `age_p99_us`.

The replay cannot always send 100x the sustained rate (it shares the CPUs and sends
256 x 256 frames); each step reports the rate it achieved, and the factor it reached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tools.bench.report import ReplayLog, latency_stats_us

FACTORS = (2.0, 10.0, 100.0)


def overload_rates(base_fps: float, factors: Sequence[float] = FACTORS) -> list[tuple[float, float]]:
    """(factor, rate) for each factor of the sustained rate."""
    if not base_fps > 0:
        raise ValueError("the sustained rate must be > 0")
    return [(float(f), float(base_fps) * float(f)) for f in factors]


def step_frames(rate_fps: float, step_s: float, min_frames: int, max_frames: int) -> int:
    return int(min(max_frames, max(min_frames, round(rate_fps * step_s))))


def summarise(log: ReplayLog) -> dict[str, Any]:
    """Decisions, how many carry a class, how many are degraded, and the decided frames' age."""
    sent = len(log.sent_seq)
    n = len(log.action_seq)
    span_s = (int(log.sent_ns[-1]) - int(log.sent_ns[0])) / 1e9 if sent > 1 else 0.0
    out: dict[str, Any] = {
        "frames_sent": sent,
        "achieved_fps": round((sent - 1) / span_s, 1) if span_s > 0 else None,
        "actions": n,
        "decisions_per_s": round(n / span_s, 1) if span_s > 0 else None,
        "with_class": None,
        "degraded": None,
        "age_us": latency_stats_us([]),
    }
    if n == 0:
        return out
    out["with_class"] = round(float(np.mean(log.action_index >= 0)), 4)
    if log.action_skipped is not None:
        out["degraded"] = round(float(np.mean(log.action_skipped > 0)), 4)
    # The frame each action decided, by sequence number (sent_seq increases).
    where = np.searchsorted(log.sent_seq, log.action_seq)
    matched = (where < sent) & (log.sent_seq[np.minimum(where, sent - 1)] == log.action_seq)
    ages = log.daemon_pub_ns[matched] - log.sent_ns[where[matched]]
    out["age_us"] = {k: (None if v is None else round(v, 1)) for k, v in latency_stats_us(ages).items()}
    return out


def run_overload(replay_at: Callable[[float, int], tuple[ReplayLog, dict[str, Any]]], base_fps: float,
                 factors: Sequence[float], step_s: float, min_frames: int = 300,
                 max_frames: int = 20_000) -> list[dict[str, Any]]:
    """One step per factor: `replay_at(rate, frames)` replays and returns the raw log and the
    daemon's own numbers over the step (counters' change, status)."""
    steps = []
    for factor, rate in overload_rates(base_fps, factors):
        n = step_frames(rate, step_s, min_frames, max_frames)
        log, daemon = replay_at(rate, n)
        step = {"factor": factor, "rate_fps": rate, **summarise(log), **daemon}
        achieved = step["achieved_fps"]
        step["achieved_factor"] = None if achieved is None else round(achieved / base_fps, 1)
        steps.append(step)
    return steps


def format_overload(steps: Sequence[dict[str, Any]], base_fps: float, base_how: str) -> list[str]:
    """The markdown lines of the overload table."""
    if not steps:
        return []
    lines = [
        f"Overload (the rate the daemon sustains without a skip: {base_fps:g} frames/s, {base_how}; "
        "age = action published - frame's publisher stamp, same host):",
        "",
        "| asked | sent (achieved) | actions/s | with a class | degraded (skipped > 0) | skipped | lost "
        "| window resets | age p50 | age p99 | age max | daemon's own age p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in steps:
        age = s["age_us"]
        lines.append(
            f"| {s['factor']:g}x = {s['rate_fps']:g} fps | {s['frames_sent']} ({_num(s['achieved_fps'])} fps, "
            f"{_num(s['achieved_factor'])}x) | {_num(s['decisions_per_s'])} | {_pct(s['with_class'])} | "
            f"{_pct(s['degraded'])} | {s.get('skipped', '-')} | {s.get('lost', '-')} | {s.get('window_resets', '-')} | "
            f"{_ms(age['p50_us'])} | "
            f"{_ms(age['p99_us'])} | {_ms(age['max_us'])} | {_ms(s.get('daemon_age_p99_us'))} |"
        )
    return lines


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f} %"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v / 1000:.2f} ms"
