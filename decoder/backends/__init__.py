"""Model backends behind one small interface, imported only when chosen.

    create_backend("auto" | "onnxruntime" | "tensorrt" | "torch", bundle, **options) -> Backend

`auto` takes TensorRT when it is importable and an NVIDIA GPU is present, else ONNX Runtime,
else PyTorch, and logs what it chose and why (`create_backend_explained` also returns it, as a
`BackendChoice`, for status). It moves on after a load failure only between backends that run
the same ONNX graphs (TensorRT -> ONNX Runtime): a bundle whose graphs ONNX Runtime cannot load
is refused, never served by PyTorch from the bundle's other files (the `.pt2` graphs); PyTorch is
chosen only where neither ONNX backend can run at all, with a warning. Options are passed to the backend's constructor
(`threads` for ONNX Runtime and PyTorch; `fp16`, `cache_dir`, `cuda_graph` for TensorRT;
`device` for PyTorch); options a backend does not take raise a `TypeError` naming them.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from decoder.backends.base import Backend, BackendError, BackendUnavailable
from protocols.bundle import Bundle, load_bundle

log = structlog.get_logger(__name__)

# name -> "module:Class"; the module is imported only when the backend is created.
BACKENDS: dict[str, str] = {
    "tensorrt": "decoder.backends.tensorrt_backend:TensorRTBackend",
    "onnxruntime": "decoder.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "torch": "decoder.backends.torch_backend:TorchBackend",
}
AUTO_ORDER = ("tensorrt", "onnxruntime", "torch")
ONNX_BACKENDS = frozenset({"tensorrt", "onnxruntime"})
"""Backends that run the bundle's ONNX graphs; auto falls back after a load failure only among them."""

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "BackendChoice",
    "choose_auto",
    "create_backend",
    "create_backend_explained",
    "cuda_device_count",
    "load_backend_class",
]


def cuda_device_count() -> int:
    """NVIDIA GPUs visible to this process, asked of the driver directly (no torch, no TensorRT)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


def _unavailable_reason(name: str) -> str | None:
    """Why backend `name` cannot run here, or None when it can (cheap: no heavy imports)."""
    if name == "tensorrt":
        if importlib.util.find_spec("tensorrt") is None:
            return "tensorrt is not installed"
        if cuda_device_count() == 0:
            return "no NVIDIA GPU visible (CUDA driver missing or no device)"
        return None
    if name == "onnxruntime":
        return None if importlib.util.find_spec("onnxruntime") is not None else "onnxruntime is not installed"
    if name == "torch":
        return None if importlib.util.find_spec("torch") is not None else "torch is not installed"
    raise ValueError(f"unknown backend {name!r}; choose auto or one of {', '.join(BACKENDS)}")


def choose_auto() -> tuple[str, str]:
    """The best backend available here, and a sentence saying why."""
    skipped = []
    for name in AUTO_ORDER:
        reason = _unavailable_reason(name)
        if reason is None:
            why = f"{name} is available" + (f" ({'; '.join(skipped)})" if skipped else "")
            return name, why
        skipped.append(f"not {name}: {reason}")
    raise BackendUnavailable("no inference backend is available: " + "; ".join(skipped))


def load_backend_class(name: str) -> type:
    """Import the module of backend `name` and return its class (BackendUnavailable if it cannot)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose auto or one of {', '.join(BACKENDS)}") from None
    module_path, class_name = target.split(":")
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name} cannot be imported: {exc}") from exc
    return getattr(module, class_name)


@dataclass(frozen=True)
class BackendChoice:
    """Which backend runs the model and why: what status and the log say about it."""

    name: str
    requested: str
    reason: str
    fell_back: bool = False  # auto took a later backend after an earlier one failed to load

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "requested": self.requested, "reason": self.reason, "fell_back": self.fell_back}


def create_backend(name: str, bundle: Bundle | Path | str, **options: Any) -> Backend:
    """Create (load) a backend for `bundle` (a `Bundle` or a bundle directory, verified on load)."""
    return create_backend_explained(name, bundle, **options)[0]


def create_backend_explained(name: str, bundle: Bundle | Path | str, **options: Any) -> tuple[Backend, BackendChoice]:
    """`create_backend`, plus which backend it took and why."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    if name != "auto":
        reason = _unavailable_reason(name)
        if reason is not None:
            raise BackendUnavailable(f"backend {name} is not available: {reason}")
        return load_backend_class(name)(bundle, **options), BackendChoice(name, name, "requested by name")
    # auto: the best available; if it fails to load (e.g. an engine build fails), say so and take
    # the next one that runs the same ONNX graphs, rather than leave the rig without a decoder.
    failures: list[str] = []
    load_failed = False
    for candidate in AUTO_ORDER:
        reason = _unavailable_reason(candidate)
        if reason is not None:
            failures.append(f"not {candidate}: {reason}")
            continue
        if load_failed and candidate not in ONNX_BACKENDS:
            log.error("no ONNX backend could load the bundle; auto does not fall back to a backend that loads other files",
                      refused=candidate, failures="; ".join(failures))
            raise BackendError(
                "the bundle's ONNX graphs did not load (" + "; ".join(failures) + f"); auto does not fall back to "
                f"{candidate}, which loads other files of the bundle; fix or re-export the bundle, or set "
                f"backend.name = {candidate} to choose it deliberately"
            )
        try:
            backend = load_backend_class(candidate)(bundle, **_options_for(candidate, options))
        except BackendError as exc:
            log.warning("backend failed to load, trying the next", backend=candidate, error=str(exc))
            failures.append(f"not {candidate}: {exc}")
            load_failed = True
            continue
        why = f"{candidate} is available" + (f" ({'; '.join(failures)})" if failures else "")
        choice = BackendChoice(candidate, "auto", why, fell_back=load_failed)
        if load_failed:
            log.warning("backend chosen after a fallback", backend=candidate, reason=why, model_id=bundle.model_id[:12])
        elif candidate not in ONNX_BACKENDS:
            log.warning("backend chosen: no ONNX backend can run here; serving the reference .pt2 graphs",
                        backend=candidate, reason=why, model_id=bundle.model_id[:12])
        else:
            log.info("backend chosen", backend=candidate, reason=why, model_id=bundle.model_id[:12])
        return backend, choice
    raise BackendUnavailable("no inference backend could load the bundle: " + "; ".join(failures))


def _options_for(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of `options` that backend `name` accepts (auto passes one options dict to all)."""
    import inspect

    params = inspect.signature(load_backend_class(name).__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(options)
    return {k: v for k, v in options.items() if k in params}
