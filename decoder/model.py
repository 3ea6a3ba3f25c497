"""A model ready to decode: a verified bundle, a warmed-up backend and its window decoder.

Loading is blocking (checksums, ONNX sessions, maybe a TensorRT build) and runs off the event
loop, both at startup and on reload; the daemon sizes everything from the bundle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

from decoder.settings import BackendSettings
from protocols.bundle import Bundle, load_bundle

log = structlog.get_logger(__name__)


class WindowDecoder(Protocol):
    """What the pipeline pushes frames into: StreamingDecoder, or WholeWindowDecoder."""

    fill: int
    last_embedding: np.ndarray | None  # of the last decision (the backend's buffer, valid until the next push)

    def push(self, frame: np.ndarray) -> np.ndarray | None: ...

    def reset(self) -> None: ...


class WholeWindowDecoder:
    """Re-runs the whole window per frame: the naive baseline the benchmark compares against.

    Keeps the last W raw frames in a preallocated ring and an ordered copy for the backend.
    """

    def __init__(self, backend: Any, window: int, frame_shape: tuple[int, int], dtype: str) -> None:
        self._backend = backend
        self._window = window
        self._ring = np.zeros((window, *frame_shape), dtype=dtype)
        self._ordered = np.zeros_like(self._ring)
        self._next = 0
        self.fill = 0
        self.last_embedding: np.ndarray | None = None

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        self._ring[self._next] = frame
        self._next = (self._next + 1) % self._window
        if self.fill < self._window:
            self.fill += 1
            if self.fill < self._window:
                return None
        head = self._window - self._next
        self._ordered[:head] = self._ring[self._next :]
        self._ordered[head:] = self._ring[: self._next]
        self.last_embedding, probabilities = self._backend.infer_whole_window(self._ordered)
        return probabilities

    def reset(self) -> None:
        self._next = 0
        self.fill = 0
        self.last_embedding = None


@dataclass
class LoadedModel:
    """Everything the pipeline needs about one model. Owned by the hot-path thread once live."""

    bundle: Bundle
    backend: Any  # decoder.backends Backend protocol
    decoder: WindowDecoder
    mode: str
    load_seconds: float
    describe: dict[str, Any] = field(default_factory=dict)
    backend_choice: dict[str, Any] = field(default_factory=dict)
    """Which backend runs the model and why (`decoder.backends.BackendChoice.as_dict()`); status
    shows it so that an `auto` fallback is never silent."""

    @property
    def model_id(self) -> str:
        return self.bundle.model_id

    @property
    def window(self) -> int:
        return self.bundle.window

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.bundle.frame_shape)  # type: ignore[return-value]

    @property
    def frame_dtype(self) -> np.dtype:
        return np.dtype(self.bundle.frame_dtype)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.bundle.class_names

    @property
    def backend_name(self) -> str:
        return str(getattr(self.backend, "name", "unknown"))

    def close(self) -> None:
        self.backend.close()


ModelLoader = Callable[[Path, BackendSettings], LoadedModel]


class ReloadNotAllowed(ValueError):
    """A reload names a bundle outside `model.reload_allowed_dirs`."""


def check_reload_allowed(bundle: Path | str, allowed_dirs: tuple[Path, ...] | list[Path]) -> Path:
    """The bundle's resolved path if `reload` may load it, else ReloadNotAllowed naming the dirs.

    Empty `allowed_dirs` (the default) allows any directory. Otherwise the path, with every
    symlink resolved (so a link inside an allowed directory that points out of it is refused),
    must lie inside one of them. Pure path logic: it opens nothing. The service calls it at the
    start of a reload, before the bundle is read, and loads the path it returns.
    """
    resolved = Path(bundle).expanduser().resolve()
    if not allowed_dirs:
        return resolved
    for directory in allowed_dirs:
        root = Path(directory).expanduser().resolve()
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    raise ReloadNotAllowed(
        f"bundle {bundle} (resolves to {resolved}) is not inside model.reload_allowed_dirs "
        f"({', '.join(str(d) for d in allowed_dirs)}); reload refused"
    )


def load_model(bundle_path: Path, settings: BackendSettings) -> LoadedModel:
    """Verify the bundle, create the backend, warm it up (blocking). Raises BundleError on a bad
    bundle and whatever the backend raises when it cannot run the model."""
    from decoder.backends import create_backend_explained  # heavy imports (onnxruntime, torch) only here
    from decoder.streaming import StreamingDecoder

    started = time.perf_counter()
    bundle = load_bundle(bundle_path)
    backend, choice = create_backend_explained(settings.name, bundle, threads=settings.threads)
    try:
        backend.warm_up(settings.warmup_frames)
        decoder: WindowDecoder
        if settings.mode == "streaming":
            decoder = StreamingDecoder(backend, bundle.window)
        else:
            decoder = WholeWindowDecoder(backend, bundle.window, bundle.frame_shape, bundle.frame_dtype)
        _warm_window(decoder, bundle, settings.warmup_frames)
        centred = bundle.adaptation is not None and settings.online_centring
        if centred:
            decoder = _online_centred(decoder, backend, bundle)
        describe = dict(backend.describe(), choice=choice.as_dict(), online_centring=centred)
    except BaseException:
        backend.close()
        raise
    seconds = time.perf_counter() - started
    return LoadedModel(bundle, backend, decoder, settings.mode, seconds, describe, choice.as_dict())


def _online_centred(decoder: WindowDecoder, backend: Any, bundle: Bundle) -> WindowDecoder:
    """`decoder` wrapped in the bundle's online centring, once its head is shown to be the
    graph's own (on random features: HeadMismatch otherwise)."""
    from decoder.adaptation import OnlineCentredDecoder, check_head

    assert bundle.adaptation is not None
    features = np.random.default_rng(0).standard_normal((bundle.window, bundle.feature_dim)).astype(np.float32)
    embedding, probabilities = backend.decode_window(features)
    centred = OnlineCentredDecoder(decoder, bundle.adaptation)
    check_head(centred, embedding, probabilities)  # before any frame: the running mean is still zero
    return centred


def _warm_window(decoder: WindowDecoder, bundle: Bundle, frames: int) -> None:
    """Run the full per-frame path (ring buffer + temporal head) before the first real frame."""
    if frames <= 0:
        return
    blank = np.zeros(bundle.frame_shape, dtype=bundle.frame_dtype)
    for _ in range(max(frames, bundle.window + 1)):
        decoder.push(blank)
    decoder.reset()
