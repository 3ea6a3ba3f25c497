"""Online centring while decoding: the bundle's `adaptation.json` applied after the graphs.

The exported graph centres the embedding on the calibration recording's mean; this keeps
re-estimating the animal's mean from the embeddings decoded since the model was loaded and
shifts the linear head's input by it (trainer/adaptation.py has the rule and why; a test holds
the two implementations to the same numbers). The running mean is the animal's, not the
window's: a gap or a pause resets the window, not the mean; a reload starts a new one (a new
bundle is a new calibration).

Per decision it costs one (C x D) matrix-vector product and a softmax on preallocated buffers,
on the hot thread; nothing is allocated.
"""

from __future__ import annotations

import math

import numpy as np

from decoder.model import WindowDecoder
from protocols.adaptation import OnlineCentringRecord

# The head recomputed here must give the graph's own probabilities for the mean at zero
# (checked once at load time): a mismatch means adaptation.json does not belong to the graphs.
HEAD_TOLERANCE = 1e-4


class HeadMismatch(ValueError):
    """adaptation.json's head does not reproduce the graph's probabilities."""


class OnlineCentredDecoder:
    """A window decoder (`StreamingDecoder`, `WholeWindowDecoder`) whose probabilities come
    from its embedding re-centred on the running mean: softmax(W (e - m) + b)."""

    def __init__(self, inner: WindowDecoder, record: OnlineCentringRecord) -> None:
        self.inner = inner
        self.weight = np.asarray(record.head_weight, dtype=np.float64)
        self.bias = np.asarray(record.head_bias, dtype=np.float64)
        self.prior_frames = record.prior_frames
        self._floor = 1.0 / record.time_constant_frames
        d = self.weight.shape[1]
        self.mean = np.zeros(d)         # running mean of the graph's (calibration-centred) embedding
        self.frames = 0                 # embeddings absorbed into it
        self._centred = np.zeros(d)
        self._logits = np.zeros(self.weight.shape[0])
        self._probabilities = np.zeros(self.weight.shape[0], dtype=np.float32)

    @property
    def fill(self) -> int:
        return self.inner.fill

    @property
    def last_embedding(self) -> np.ndarray | None:
        return self.inner.last_embedding

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        if self.inner.push(frame) is None:
            return None
        embedding = self.inner.last_embedding
        centred = np.subtract(embedding, self.mean, out=self._centred)
        out = self._head(centred)
        if math.isfinite(float(centred.sum())):  # a non-finite embedding must not poison the mean for good
            self.frames += 1
            self.mean += max(1.0 / (self.prior_frames + self.frames), self._floor) * centred
        return out

    def _head(self, centred: np.ndarray) -> np.ndarray:
        logits = np.dot(self.weight, centred, out=self._logits)
        logits += self.bias
        logits -= logits.max()
        np.exp(logits, out=logits)
        logits /= logits.sum()
        self._probabilities[:] = logits
        return self._probabilities

    def reset(self) -> None:
        self.inner.reset()

    def state(self) -> dict[str, float | int]:
        """For status: how many embeddings the mean has absorbed and how far it has moved."""
        return {"frames": self.frames, "offset_norm": float(np.sqrt(self.mean @ self.mean))}


def check_head(decoder: OnlineCentredDecoder, embedding: np.ndarray, probabilities: np.ndarray) -> None:
    """HeadMismatch unless the decoder's head, with the running mean at zero, gives the graph's
    `probabilities` for its `embedding`."""
    worst = float(np.abs(decoder._head(np.asarray(embedding, dtype=np.float64)) - probabilities).max())
    if not worst <= HEAD_TOLERANCE:
        raise HeadMismatch(f"adaptation.json's head gives probabilities {worst:.3g} away from the graph's "
                           f"(tolerance {HEAD_TOLERANCE:g}); the file does not belong to this model")
