"""Counters, rolling latency percentiles, the log rate limiter, the token bucket and the mailbox bound."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    from decoder.token_bucket import TokenBucket

    now = [0.0]
    bucket = TokenBucket(rate_per_s=10.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s() == pytest.approx(0.1)
    now[0] = 0.05
    assert not bucket.take() and bucket.wait_s() == pytest.approx(0.05)
    now[0] = 0.1
    assert bucket.take() and not bucket.take()
    now[0] = 100.0  # a long quiet spell refills to the burst, no more
    assert sum(bucket.take() for _ in range(10)) == 3
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=0.0, burst=1)


def test_shared_buckets_keep_one_client_to_its_share_and_remember_a_bounded_number() -> None:
    from decoder.token_bucket import SharedBuckets

    now = [0.0]
    buckets = SharedBuckets(rate_per_s=10.0, burst=4, client_share=0.5, max_clients=3, clock=lambda: now[0])
    assert [buckets.take(b"flood") for _ in range(4)] == [True, True, False, False]  # its half of 4
    assert [buckets.take(b"operator") for _ in range(3)] == [True, True, False]  # the other half
    assert not buckets.take(b"third")  # the shared bucket is empty: nobody gets more
    now[0] = 0.1  # one token due in the shared bucket, half a token per client
    assert not buckets.take(b"flood")
    now[0] = 0.2
    assert buckets.take(b"flood")
    buckets.take(b"x")  # two more clients push the two least recently seen out
    buckets.take(b"y")
    assert set(buckets._clients) == {b"flood", b"x", b"y"}
    with pytest.raises(ValueError):
        SharedBuckets(rate_per_s=1.0, burst=1, client_share=0.0)


def test_mailbox_runs_at_most_limit_calls_per_turn_and_keeps_the_rest() -> None:
    import zmq

    from decoder.worker import Mailbox

    context = zmq.Context()
    mailbox = Mailbox(context)
    try:
        ran: list[int] = []
        for i in range(6):
            mailbox.post(ran.append, i)
        call = lambda fn, args: fn(*args)  # noqa: E731
        mailbox.run_pending(call, lambda: False, limit=4)
        assert ran == [0, 1, 2, 3] and mailbox.pending
        assert not mailbox.receiver.poll(0)  # no wake-up is left: `pending` is what says so
        mailbox.run_pending(call, lambda: False, limit=4)
        assert ran == list(range(6)) and not mailbox.pending
    finally:
        mailbox.close()
        context.term()
