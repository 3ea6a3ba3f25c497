"""Debouncing is a pure function of the probability sequence: unit and property tests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decoder.debounce import Debouncer, frames_for_duration

C = 4


def onehot(index: int | None, p: float = 0.9) -> np.ndarray:
    """A probability vector: ``index`` at ``p`` (None: flat, below any threshold)."""
    if index is None:
        return np.full(C, 1.0 / C, np.float32)
    out = np.full(C, (1.0 - p) / (C - 1), np.float32)
    out[index] = p
    return out


def feed(debouncer: Debouncer, votes: list[int | None]) -> list[tuple[str, int, int]]:
    events = []
    for seq, vote in enumerate(votes):
        events += [(t.kind, t.class_index, t.sequence) for t in debouncer.update(onehot(vote), seq, seq * 1000)]
    return events


def test_onset_only_after_min_frames_of_the_same_vote() -> None:
    d = Debouncer(min_confidence=0.6, min_frames=3)
    assert feed(d, [1, 1]) == []
    assert d.update(onehot(1), 2, 2000)[0].kind == "onset"
    assert d.active == 1 and d.active_since == 0


def test_flicker_shorter_than_min_frames_is_ignored() -> None:
    d = Debouncer(0.6, 3)
    events = feed(d, [1, 1, 1, 2, 2, 1, 1, 3, 1, 1])
    assert events == [("onset", 1, 2)]


def test_switch_emits_offset_then_onset_on_the_confirming_frame() -> None:
    d = Debouncer(0.6, 2)
    events = feed(d, [0, 0, 0, 2, 2, 2])
    assert events == [("onset", 0, 1), ("offset", 0, 4), ("onset", 2, 4)]
    onset, offset = None, None
    d2 = Debouncer(0.6, 2)
    for seq, vote in enumerate([0, 0, 0, 2, 2]):
        for t in d2.update(onehot(vote), seq, seq * 1000):
            if t.kind == "offset":
                offset = t
            else:
                onset = t
    assert offset is not None and onset is not None
    assert offset.since_sequence == 3 and offset.duration_ns == 3000  # action 0 held frames 0..2
    assert onset.duration_ns == 1000  # run of class 2 from frame 3, confirmed at frame 4


def test_low_confidence_counts_as_no_action() -> None:
    d = Debouncer(0.6, 2)
    events = feed(d, [1, 1, None, None, None])
    assert events == [("onset", 1, 1), ("offset", 1, 3)]
    d = Debouncer(0.95, 1)
    assert feed(d, [1, 1]) == []  # 0.9 < 0.95


def test_reset_ends_the_active_action() -> None:
    d = Debouncer(0.6, 1)
    feed(d, [2, 2])
    (offset,) = d.reset(sequence=5, t_ns=9000)
    assert (offset.kind, offset.class_index, offset.reason, offset.duration_ns) == ("offset", 2, "reset", 9000)
    assert d.reset(6, 10_000) == []  # nothing active any more
    assert d.active is None


def test_frames_for_duration() -> None:
    assert frames_for_duration(0.1, 30.0) == 3
    assert frames_for_duration(0.0, 30.0) == 1
    assert frames_for_duration(0.25, 8.0) == 2
    with pytest.raises(ValueError, match="frame rate"):
        frames_for_duration(0.1, 0.0)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="min_confidence"):
        Debouncer(1.5, 1)
    with pytest.raises(ValueError, match="min_frames"):
        Debouncer(0.5, 0)


@settings(max_examples=200, deadline=None)
@given(
    votes=st.lists(st.one_of(st.none(), st.integers(0, C - 1)), max_size=80),
    min_frames=st.integers(1, 5),
)
def test_events_alternate_and_every_onset_is_backed_by_a_long_enough_run(votes: list[int | None], min_frames: int) -> None:
    d = Debouncer(0.6, min_frames)
    active: int | None = None
    for seq, vote in enumerate(votes):
        for t in d.update(onehot(vote), seq, seq):
            if t.kind == "offset":
                assert active == t.class_index
                active = None
            else:
                assert active is None
                active = t.class_index
                run = votes[t.since_sequence : seq + 1]
                assert len(run) == min_frames and set(run) == {t.class_index}
    assert d.active == active
