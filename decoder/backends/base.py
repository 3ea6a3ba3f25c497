"""The one small interface every inference backend implements, and the types they share.

Ownership of results: to keep the hot path free of allocations, the arrays a backend returns
are views of its own preallocated output buffers. They stay valid until the next call of the
same method; copy them (`np.copy`) to keep them longer.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from protocols.bundle import Bundle

Probabilities = np.ndarray  # (C,) float32, sums to 1
Embedding = np.ndarray  # (D,) float32
Features = np.ndarray  # (F,) float32


class BackendError(RuntimeError):
    """A backend cannot load or run this bundle; the message says why."""


class BackendUnavailable(BackendError):
    """The backend cannot run on this machine (library not installed, no GPU, ...)."""


@runtime_checkable
class Backend(Protocol):
    """Load once, warm up, then infer on one frame or one window at a time (batch 1)."""

    name: str
    bundle: Bundle

    def describe(self) -> dict[str, Any]:
        """Backend, device, options, and the input/output names, dtypes and shapes."""
        ...

    def warm_up(self, n: int = 20) -> None:
        """Run `n` inferences of every graph on synthetic frames before serving."""
        ...

    def encode_frame(self, frame: np.ndarray) -> Features:
        """One raw frame (H, W) in the bundle's dtype -> features (F,) float32."""
        ...

    def decode_window(self, features: np.ndarray) -> tuple[Embedding, Probabilities]:
        """Features (W, F) float32, oldest first -> (embedding (D,), probabilities (C,))."""
        ...

    def infer_whole_window(self, frames: np.ndarray) -> tuple[Embedding, Probabilities]:
        """Raw frames (W, H, W) oldest first -> (embedding, probabilities), without streaming."""
        ...

    def close(self) -> None:
        """Release sessions and device memory. Safe to call twice."""
        ...


class InputChecker:
    """Cheap per-call checks of shape and dtype (a tuple and a dtype comparison, no allocation).

    A frame of the wrong size or dtype must be refused, never silently cast: a float frame fed
    to a uint16 model would be scaled wrongly and still produce confident probabilities.
    """

    def __init__(self, bundle: Bundle) -> None:
        h, w = bundle.frame_shape
        self.frame_shape = (h, w)
        self.frames_shape = (bundle.window, h, w)
        self.features_shape = (bundle.window, bundle.feature_dim)
        self.frame_dtype = np.dtype(bundle.frame_dtype)
        self.float32 = np.dtype(np.float32)

    def frame(self, frame: np.ndarray) -> None:
        if frame.shape != self.frame_shape or frame.dtype != self.frame_dtype:
            raise ValueError(
                f"frame is {_what(frame)}; the model takes one {self.frame_dtype} frame of shape {self.frame_shape}"
            )

    def frames(self, frames: np.ndarray) -> None:
        if frames.shape != self.frames_shape or frames.dtype != self.frame_dtype:
            raise ValueError(
                f"frames are {_what(frames)}; the model takes {self.frame_dtype} windows of shape {self.frames_shape}"
            )

    def features(self, features: np.ndarray) -> None:
        if features.shape != self.features_shape or features.dtype != self.float32:
            raise ValueError(
                f"features are {_what(features)}; the temporal part takes float32 of shape {self.features_shape}"
            )


def _what(array: Any) -> str:
    shape = getattr(array, "shape", None)
    dtype = getattr(array, "dtype", None)
    if shape is None:
        return f"a {type(array).__name__}, not an array"
    return f"{dtype} of shape {tuple(shape)}"


def io_description(bundle: Bundle) -> dict[str, Any]:
    """The graph signatures from the manifest, for `describe()`."""
    return {
        graph: {
            kind: [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in sig]
            for kind, sig in bundle.manifest.graph_signature(graph).items()
        }
        for graph in ("frame_encoder", "temporal", "whole_window")
    }


def synthetic_frames(bundle: Bundle, n: int, seed: int = 0) -> np.ndarray:
    """`n` random raw frames in the bundle's dtype (warm-up and benchmarks)."""
    rng = np.random.default_rng(seed)
    h, w = bundle.frame_shape
    dtype = np.dtype(bundle.frame_dtype)
    high = 255 if dtype == np.uint8 else 4095
    return rng.integers(0, high, size=(n, h, w), endpoint=True).astype(dtype)
