"""RingHistogram: every value a latency ring records, counted once, read from another thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from decoder.ring_histogram import RingHistogram
from decoder.stats import LatencyWindow

BOUNDS_S = (0.001, 0.002, 0.005)


class Recorder:
    """A ring and the count of values given to it, as the hot path keeps them."""

    def __init__(self, capacity: int = 8) -> None:
        self.ring = LatencyWindow(capacity)
        self.recorded = 0

    def record_us(self, *values_us: float) -> None:
        for v in values_us:
            self.recorded += 1
            self.ring.record(round(v * 1000))


def test_each_value_lands_once_in_the_bucket_whose_bound_it_does_not_exceed() -> None:
    r = Recorder()
    h = RingHistogram(r.ring, lambda: r.recorded, BOUNDS_S)
    r.record_us(500, 1000, 1500, 7000)  # 1000 us is exactly on the first bound: le is inclusive
    assert h.harvest() == 4
    assert h.harvest() == 0  # nothing new
    snap = h.snapshot()
    assert snap.cumulative == (2, 3, 3, 4) and snap.count == 4 and snap.missed == 0
    assert snap.sum_s == pytest.approx(0.010)
    r.record_us(3000)
    h.harvest()
    assert h.snapshot().cumulative == (2, 3, 4, 5)


def test_values_written_across_the_end_of_the_ring_are_read_in_full() -> None:
    r = Recorder(capacity=8)
    h = RingHistogram(r.ring, lambda: r.recorded, BOUNDS_S)
    r.record_us(*[100] * 6)
    h.harvest()
    r.record_us(*[1500] * 5)  # wraps round the end of the ring
    assert h.harvest() == 5
    assert h.snapshot().cumulative == (6, 11, 11, 11)


def test_a_ring_that_went_round_unread_counts_what_was_overwritten() -> None:
    r = Recorder(capacity=8)
    h = RingHistogram(r.ring, lambda: r.recorded, BOUNDS_S)
    r.record_us(*[4000] * 12, *[100] * 8)  # 20 values: the last 8 are still in the ring
    assert h.harvest() == 8
    snap = h.snapshot()
    assert snap.count == 8 and snap.missed == 12 and snap.cumulative == (8, 8, 8, 8)
    r.record_us(*[100] * 16)  # exactly two turns: the cursor is back where it was
    assert h.harvest() == 8 and h.snapshot().missed == 20


def test_a_count_a_value_ahead_of_the_ring_is_not_taken_for_a_turn() -> None:
    r = Recorder(capacity=8)
    h = RingHistogram(r.ring, lambda: r.recorded + 1, BOUNDS_S)  # a frame counted, not yet recorded
    r.record_us(100, 100, 100)
    assert h.harvest() == 3 and h.snapshot().missed == 0


def test_a_histogram_created_late_counts_only_what_came_after() -> None:
    r = Recorder()
    r.record_us(100, 100)
    h = RingHistogram(r.ring, lambda: r.recorded, BOUNDS_S)
    r.record_us(1500)
    h.harvest()
    assert h.snapshot().count == 1


def test_harvests_from_two_threads_while_the_ring_is_written_count_every_value_once() -> None:
    ring = LatencyWindow(4096)
    recorded = [0]
    h = RingHistogram(ring, lambda: recorded[0], BOUNDS_S)
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            h.harvest()

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    values = np.random.default_rng(0).integers(1, 6_000_000, 50_000)
    for i, v in enumerate(values):  # the writer's order: count, then record (as _decide does)
        recorded[0] += 1
        ring.record(int(v))
        if i % 500 == 0:
            time.sleep(0.0002)  # the hot thread waits for frames too: the readers get the GIL
    done.set()
    for t in readers:
        t.join()
    h.harvest()
    snap = h.snapshot()
    assert snap.missed == 0 and snap.count == len(values)
    expected = np.cumsum(np.bincount(np.searchsorted([1_000_000, 2_000_000, 5_000_000], values), minlength=4))
    assert snap.cumulative == tuple(expected)
    assert snap.sum_s == pytest.approx(values.sum() / 1e9)


def test_bounds_must_increase() -> None:
    with pytest.raises(ValueError):
        RingHistogram(LatencyWindow(4), lambda: 0, (0.002, 0.001))
