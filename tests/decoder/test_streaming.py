"""StreamingDecoder: ring-buffer order, fill/reset, and equality with whole-window inference."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from decoder.backends import create_backend
from decoder.streaming import StreamingDecoder

W, F = 5, 3


class RecordingBackend:
    """A pure-NumPy backend following the Backend protocol, so the ring buffer's ordering can be
    checked exactly: a frame's features are (its first pixel, 0, 0), and `decode_window` returns
    the window it was given as its 'embedding'."""

    name = "recording"

    def __init__(self) -> None:
        self.bundle = SimpleNamespace(window=W, feature_dim=F, frame_shape=(2, 2), frame_dtype="uint16")
        self._features = np.zeros(F, np.float32)
        self._embedding = np.zeros(W * F, np.float32)
        self._probabilities = np.zeros(2, np.float32)
        self.encoded = 0

    def encode_frame(self, frame: np.ndarray) -> np.ndarray:
        self.encoded += 1
        self._features[:] = (frame[0, 0], 0, 0)
        return self._features

    def decode_window(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert features.shape == (W, F) and features.flags.c_contiguous
        self._embedding[:] = features.ravel()
        self._probabilities[:] = (features[-1, 0], features[0, 0])  # newest, oldest
        return self._embedding, self._probabilities


def _frame(value: int) -> np.ndarray:
    return np.full((2, 2), value, np.uint16)


def test_none_until_full_then_every_frame_oldest_first() -> None:
    backend = RecordingBackend()
    stream = StreamingDecoder(backend, W)
    for i in range(W - 1):
        assert stream.push(_frame(i)) is None
        assert stream.fill == i + 1
    for i in range(W - 1, 4 * W + 2):  # wraps around the ring several times
        probabilities = stream.push(_frame(i))
        assert probabilities is not None and stream.fill == W
        window = stream.last_embedding.reshape(W, F)[:, 0]
        np.testing.assert_array_equal(window, np.arange(i - W + 1, i + 1))
        np.testing.assert_array_equal(probabilities, [i, i - W + 1])
    assert backend.encoded == 4 * W + 2  # each frame encoded exactly once


def test_reset_starts_a_new_window_without_reallocating() -> None:
    stream = StreamingDecoder(RecordingBackend(), W)
    ring = stream._ring
    ring_pointer = ring.ctypes.data
    for i in range(W + 2):
        stream.push(_frame(i))
    stream.reset()
    assert stream.fill == 0 and stream.last_embedding is None
    assert stream.window_features().shape == (0, F)
    for i in range(100, 100 + W - 1):
        assert stream.push(_frame(i)) is None
    np.testing.assert_array_equal(stream.window_features()[:, 0], np.arange(100, 100 + W - 1))
    stream.push(_frame(200))
    np.testing.assert_array_equal(stream.last_embedding.reshape(W, F)[:, 0], [100, 101, 102, 103, 200])
    assert stream._ring is ring and ring.ctypes.data == ring_pointer


def test_window_must_match_the_model() -> None:
    with pytest.raises(ValueError, match="window 6 differs from the model's receptive field of 5 frames"):
        StreamingDecoder(RecordingBackend(), W + 1)
    assert StreamingDecoder(RecordingBackend()).window == W  # default: the bundle's window


def test_window_of_one_frame() -> None:
    backend = RecordingBackend()
    backend.bundle.window = 1
    stream = StreamingDecoder(backend)
    assert stream.window == 1
    # RecordingBackend checks for W-row windows, so only the ring bookkeeping is exercised here
    stream._decode = lambda features: (features.copy(), features[:, 0].copy())
    for i in range(3):
        np.testing.assert_array_equal(stream.push(_frame(i)), [i])


def test_bad_frame_is_refused_and_loses_nothing(tiny_bundle, raw_frames: np.ndarray) -> None:
    backend = create_backend("onnxruntime", tiny_bundle)
    try:
        stream = StreamingDecoder(backend, tiny_bundle.window)
        for frame in raw_frames[: tiny_bundle.window - 1]:
            stream.push(frame)
        with pytest.raises(ValueError, match="frame is"):
            stream.push(raw_frames[0].astype(np.float32))
        assert stream.fill == tiny_bundle.window - 1  # the refused frame did not enter the window
        w = tiny_bundle.window
        probabilities = stream.push(raw_frames[w - 1]).copy()
        _, whole = backend.infer_whole_window(raw_frames[:w])
        np.testing.assert_allclose(probabilities, whole, atol=1e-6)
    finally:
        backend.close()


def test_onnxruntime_streaming_matches_pytorch(tiny_model, tiny_bundle, raw_frames: np.ndarray) -> None:
    """The product path (stream on ONNX Runtime) against the model as trained (PyTorch, whole window)."""
    backend = create_backend("onnxruntime", tiny_bundle)
    try:
        w = tiny_bundle.window
        stream = StreamingDecoder(backend, w)
        worst = 0.0
        for i, frame in enumerate(raw_frames):
            probabilities = stream.push(frame)
            if probabilities is None:
                continue
            ref_embedding, ref_probabilities = tiny_model.reference(raw_frames[i - w + 1 : i + 1])
            worst = max(
                worst,
                float(np.abs(probabilities - ref_probabilities).max()),
                float(np.abs(stream.last_embedding - ref_embedding).max()),
            )
        assert worst <= 1e-4, worst
    finally:
        backend.close()
