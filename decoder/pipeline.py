"""The per-frame decoding state machine. Runs only on the inference thread.

For each frame it decides whether the window is still valid (sequence gaps), pushes the frame
through the model's window decoder (each frame encoded once), and debounces the result. It
knows nothing about sockets or asyncio, so the same object decodes recorded frames offline
and live frames in the daemon, which is what makes "identical action sequence" testable.

Gap policy: frames lost upstream between two decoded frames leave holes the temporal head does
not see; up to ``max_gap_frames`` of them are tolerated, a larger gap (or a sequence number that
goes backwards: the publisher restarted) resets the window, which then refills before the next
decision. Frames the daemon received but skipped itself (overload: a newer frame arrived first)
do not count: under overload the window keeps going over the frames that were decoded, sparser
in time, and every such decision says so (its action's ``skipped`` > 0), rather than resetting
for ever and publishing only "filling". Every reset also ends the active debounced action (an
offset event).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from decoder.debounce import Debouncer, Transition
from decoder.model import LoadedModel

FILLING = "filling"
DECODING = "decoding"


@dataclass(slots=True)
class Decision:
    """What one frame produced. ``probabilities`` is None while the window fills."""

    seq: int
    t_acq_ns: int
    t_done_ns: int
    state: str
    model_id: str
    class_names: tuple[str, ...]  # of the model that decided (a reload may follow right after)
    index: int = -1
    confidence: float = 0.0
    probabilities: tuple[float, ...] = ()
    transitions: list[Transition] = field(default_factory=list)
    reset_reason: str | None = None


class FramePipeline:
    """One model's window decoder plus gap handling and debouncing."""

    def __init__(self, model: LoadedModel, debouncer: Debouncer, max_gap_frames: int) -> None:
        self.model = model
        self.debouncer = debouncer
        self.max_gap_frames = max_gap_frames
        self._last_seq: int | None = None
        self._last_t_ns = 0
        self.resets = 0
        self.non_finite_outputs = 0

    @property
    def window_fill(self) -> int:
        return self.model.decoder.fill

    def process(self, seq: int, t_acq_ns: int, frame: np.ndarray, skipped: int = 0) -> Decision:
        """Decode one validated frame (the model's shape and dtype, finite values); `skipped`:
        frames since the last decoded one that the daemon received but did not decode."""
        transitions: list[Transition] = []
        reason = self._gap_reason(seq, skipped)
        if reason is not None:
            transitions = self._reset()
        self._last_seq = seq
        self._last_t_ns = t_acq_ns
        model = self.model
        probabilities = model.decoder.push(frame)
        if probabilities is not None and not math.isfinite(float(probabilities.sum())):
            # A model that turns finite input into NaN says nothing: start the window over.
            self.non_finite_outputs += 1
            transitions.extend(self._reset())
            probabilities, reason = None, "non-finite model output"
        if probabilities is None:
            return Decision(
                seq, t_acq_ns, time.monotonic_ns(), FILLING, model.model_id, model.class_names,
                transitions=transitions, reset_reason=reason,
            )
        transitions.extend(self.debouncer.update(probabilities, seq, t_acq_ns))
        index = int(np.argmax(probabilities))
        return Decision(
            seq,
            t_acq_ns,
            time.monotonic_ns(),
            DECODING,
            model.model_id,
            model.class_names,
            index=index,
            confidence=min(1.0, max(0.0, float(probabilities[index]))),
            probabilities=tuple(probabilities.tolist()),  # a copy: the backend may reuse its buffer
            transitions=transitions,
            reset_reason=reason,
        )

    def _gap_reason(self, seq: int, skipped: int = 0) -> str | None:
        if self._last_seq is None:
            return None
        if seq <= self._last_seq:
            return "sequence restarted"
        if seq - self._last_seq - 1 - skipped > self.max_gap_frames:
            return "gap"
        return None

    def _reset(self) -> list[Transition]:
        self.resets += 1
        self.model.decoder.reset()
        if self._last_seq is None:
            return self.debouncer.reset(0, 0)
        return self.debouncer.reset(self._last_seq, self._last_t_ns)

    def reset(self) -> list[Transition]:
        """Start over (pause, resume): empty window, active action ended. The next frame does not
        count as a gap."""
        transitions = self._reset()
        self._last_seq = None
        return transitions

    def swap(self, model: LoadedModel) -> tuple[LoadedModel, list[Transition]]:
        """Put a new (warmed-up) model in place between two frames; returns the old one, to close."""
        transitions = self.reset()
        old, self.model = self.model, model
        return old, transitions
