"""Debouncing: turn per-frame class probabilities into onset/offset transitions (pure, no I/O).

Stimulus hardware wants "the animal started grooming", not 30 noisy guesses a second. A frame
votes for its most probable class when that probability reaches ``min_confidence``; otherwise it
votes for "no action". The active action changes only after ``min_frames`` consecutive frames
vote for the same new value: then an offset of the old action (if any) and an onset of the new
one (if any) are emitted, stamped with the frame that confirmed them and the frame the run
started on. ``reset()`` (a large gap, a model swap) ends the active action, because after a
gap the daemon no longer knows what the animal is doing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

TransitionKind = Literal["onset", "offset"]


@dataclass(frozen=True, slots=True)
class Transition:
    kind: TransitionKind
    class_index: int
    sequence: int  # the frame that confirmed the transition
    t_ns: int  # that frame's acquisition time
    since_sequence: int  # the first frame of the run that led to it (onset) / ended it (offset)
    duration_ns: int  # onset: how long the run held before it was confirmed; offset: how long the action lasted
    confidence: float  # mean top-class probability over the confirming run (0.0 for resets)
    reason: Literal["debounced", "reset"] = "debounced"


def frames_for_duration(min_duration_s: float, frame_rate_hz: float) -> int:
    """Consecutive frames needed for ``min_duration_s`` at the model's frame rate (at least 1)."""
    if not (frame_rate_hz > 0 and math.isfinite(frame_rate_hz)):
        raise ValueError(f"frame rate must be a positive number, got {frame_rate_hz!r}")
    return max(1, round(min_duration_s * frame_rate_hz))


class Debouncer:
    """Hysteresis over per-frame votes. Keeps O(1) state; allocates nothing per frame."""

    def __init__(self, min_confidence: float, min_frames: int) -> None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        if min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {min_frames}")
        self.min_confidence = min_confidence
        self.min_frames = min_frames
        self.active: int | None = None  # class index of the current action, None: no action
        self.active_since: int | None = None
        self._active_since_t_ns = 0
        self._candidate: int | None = None
        self._candidate_since = 0
        self._candidate_since_t_ns = 0
        self._run_length = 0
        self._run_confidence = 0.0

    def vote(self, probabilities: np.ndarray) -> tuple[int | None, float]:
        """The class a frame votes for (None below min_confidence) and its probability."""
        index = int(np.argmax(probabilities))
        confidence = float(probabilities[index])
        return (index if confidence >= self.min_confidence else None), confidence

    def update(self, probabilities: np.ndarray, sequence: int, t_ns: int) -> list[Transition]:
        """Feed one decoded frame (``t_ns``: its acquisition time); returns the transitions it
        confirms (usually none)."""
        vote, confidence = self.vote(probabilities)
        if vote == self.active:
            self._candidate_run_clear()
            return []
        if self._run_length > 0 and vote == self._candidate:
            self._run_length += 1
            self._run_confidence += confidence
        else:
            self._candidate = vote
            self._candidate_since = sequence
            self._candidate_since_t_ns = t_ns
            self._run_length = 1
            self._run_confidence = confidence
        if self._run_length < self.min_frames:
            return []
        mean_confidence = self._run_confidence / self._run_length
        since, since_t_ns = self._candidate_since, self._candidate_since_t_ns
        transitions: list[Transition] = []
        if self.active is not None:
            lasted = max(0, since_t_ns - self._active_since_t_ns)
            transitions.append(Transition("offset", self.active, sequence, t_ns, since, lasted, mean_confidence))
        if vote is not None:
            held = max(0, t_ns - since_t_ns)
            transitions.append(Transition("onset", vote, sequence, t_ns, since, held, mean_confidence))
        self.active = vote
        self.active_since = since if vote is not None else None
        self._active_since_t_ns = since_t_ns
        self._candidate_run_clear()
        return transitions

    def reset(self, sequence: int, t_ns: int) -> list[Transition]:
        """Forget everything; ends the active action (offset with reason "reset").

        ``sequence``/``t_ns``: the last frame known to belong to the action (the reset's cause
        comes after it)."""
        transitions: list[Transition] = []
        if self.active is not None:
            lasted = max(0, t_ns - self._active_since_t_ns)
            transitions.append(Transition("offset", self.active, sequence, t_ns, sequence, lasted, 0.0, "reset"))
        self.active = None
        self.active_since = None
        self._candidate_run_clear()
        return transitions

    def _candidate_run_clear(self) -> None:
        self._candidate = None
        self._run_length = 0
        self._run_confidence = 0.0
