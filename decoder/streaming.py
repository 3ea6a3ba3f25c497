"""Streaming inference: encode each frame once, run only the temporal part over the window.

Per-frame features go into a ring buffer stored twice over (2W rows; frame i is written to
row i and row i + W), so the last W features, oldest first, are always one contiguous slice:
`ring[head : head + W]` (the W such views are made once). No copy, no `np.roll`, nothing
allocated per frame.
"""

from __future__ import annotations

import numpy as np

from decoder.backends.base import Backend


class StreamingDecoder:
    """`push(frame)` -> class probabilities (C,) once `window` frames have arrived, else None.

    The returned probabilities (and `last_embedding`) are the backend's output buffers: valid
    until the next `push`. `reset()` forgets the window (after a gap in the frame stream, for
    instance) without reallocating.
    """

    def __init__(self, backend: Backend, window: int | None = None) -> None:
        bundle = backend.bundle
        if window is None:
            window = bundle.window
        if window != bundle.window:
            # The temporal graph has a static window; a different one cannot be served.
            raise ValueError(f"window {window} differs from the model's receptive field of {bundle.window} frames")
        self.backend = backend
        self.window = int(window)
        self._ring = np.zeros((2 * self.window, bundle.feature_dim), dtype=np.float32)
        # the W possible windows as views made once, so a push does not even create a view
        self._windows = [self._ring[i : i + self.window] for i in range(self.window)]
        self._head = 0  # row the next frame's features go to, in [0, window)
        self._fill = 0
        self.last_embedding: np.ndarray | None = None
        # bound methods looked up once, not per frame
        self._encode = backend.encode_frame
        self._decode = backend.decode_window

    @property
    def fill(self) -> int:
        """Frames currently in the window (0..window)."""
        return self._fill

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        features = self._encode(frame)
        head = self._head
        w = self.window
        self._ring[head] = features
        self._ring[head + w] = features
        head += 1
        if head == w:
            head = 0
        self._head = head
        if self._fill < w:
            self._fill += 1
            if self._fill < w:
                return None
        embedding, probabilities = self._decode(self._windows[head])
        self.last_embedding = embedding
        return probabilities

    def window_features(self) -> np.ndarray:
        """The features of the current window, oldest first (a view; for inspection and tests)."""
        return self._ring[self._head : self._head + self.window][self.window - self._fill :]

    def reset(self) -> None:
        self._head = 0
        self._fill = 0
        self.last_embedding = None
