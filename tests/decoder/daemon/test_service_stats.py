"""Counters, rolling latency percentiles and the log rate limiter."""

from __future__ import annotations

import numpy as np

from decoder.stats import Counters, LatencyWindow, RateLimiter


def test_latency_window_keeps_the_last_n_and_reports_microseconds() -> None:
    window = LatencyWindow(capacity=100)
    assert window.percentiles_us() == {}
    for ns in range(1_000, 1_000 * 301, 1_000):  # 1..300 us; only the last 100 stay
        window.record(ns)
    assert len(window) == 100
    p = window.percentiles_us()
    assert p["p50_us"] == float(np.percentile(np.arange(201, 301), 50))
    assert p["max_us"] == 300.0 and p["p99_us"] <= p["p999_us"] <= p["max_us"]
    window.clear()
    assert window.percentiles_us() == {}


def test_rate_limiter_says_how_many_were_held_back() -> None:
    now = [0.0]
    limiter = RateLimiter(5.0, clock=lambda: now[0])
    assert limiter.allow("nan") == 0
    assert [limiter.allow("nan") for _ in range(3)] == [None, None, None]
    assert limiter.allow("shape") == 0  # keys are independent
    now[0] = 5.0
    assert limiter.allow("nan") == 3


def test_counters_are_plain_ints() -> None:
    counters = Counters()
    counters.frames_skipped += 2
    data = counters.as_dict()
    assert data["frames_skipped"] == 2 and all(type(v) is int for v in data.values())
