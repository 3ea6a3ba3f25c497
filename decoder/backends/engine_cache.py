"""On-disk cache of TensorRT engines, keyed by everything that makes an engine valid.

A serialized TensorRT engine runs only on the GPU model (compute capability) and TensorRT
version that built it, and only means something for the ONNX graph and precision it was built
from. The key holds all of these; the file name carries the key's digest and a JSON sidecar
holds the key itself plus the engine's sha256, so an engine copied from another machine, built
by another TensorRT, or damaged on disk is recognised and refused with a message naming the
difference, never handed to TensorRT to crash on.

Layout: `CACHE/<model_id[:16]>/<graph>.<precision>.<digest[:16]>.engine` (+ `.json`), and
`CACHE/timing/<gpu>-<cc>-trt<version>.cache` (TensorRT timing caches, shared across models).
No TensorRT import here: the logic is tested on machines without a GPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from decoder.backends.base import BackendError

KEY_VERSION = 1  # bump when the key's meaning changes


class EngineMismatch(BackendError):
    """A cached engine exists but does not fit this machine, model or TensorRT."""


@dataclass(frozen=True)
class EngineKey:
    graph: str
    onnx_sha256: str  # of the exact ONNX bytes given to the builder (after backend-specific edits)
    gpu_name: str
    compute_capability: str  # "9.0"
    tensorrt_version: str
    precision: str  # "fp32" | "fp16"
    key_version: int = KEY_VERSION

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()

    def differences(self, other: dict[str, Any]) -> list[str]:
        """Human-readable `field: cached X, here Y` for every field that differs from `other`."""
        out = []
        for f in fields(self):
            mine, theirs = getattr(self, f.name), other.get(f.name)
            if mine != theirs:
                out.append(f"{f.name}: engine has {theirs!r}, this machine/bundle needs {mine!r}")
        return out


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "actionloop" / "engines"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "unknown"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class EngineCache:
    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def model_dir(self, model_id: str) -> Path:
        return self.root / model_id[:16]

    def engine_path(self, model_id: str, key: EngineKey) -> Path:
        return self.model_dir(model_id) / f"{key.graph}.{key.precision}.{key.digest()[:16]}.engine"

    def timing_cache_path(self, key: EngineKey) -> Path:
        name = f"{_safe(key.gpu_name)}-cc{key.compute_capability}-trt{_safe(key.tensorrt_version)}.cache"
        return self.root / "timing" / name

    def load(self, model_id: str, key: EngineKey) -> bytes | None:
        """The cached engine for `key`, or None if there is none. Raises `EngineMismatch` when the
        file exists but its sidecar names another key or its bytes are not the ones recorded."""
        path = self.engine_path(model_id, key)
        if not path.exists():
            return None
        meta_path = path.with_suffix(".json")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise EngineMismatch(f"engine {path} has no readable metadata ({exc}); delete it or rebuild") from None
        diffs = key.differences(meta.get("key", {}))
        if diffs:
            raise EngineMismatch(f"engine {path} was built for something else: " + "; ".join(diffs))
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.get("engine_sha256"):
            raise EngineMismatch(f"engine {path} is damaged (sha256 differs from its metadata); rebuild it")
        return data

    def store(self, model_id: str, key: EngineKey, data: bytes, **extra: Any) -> Path:
        path = self.engine_path(model_id, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, data)
        meta = {"key": key.as_dict(), "engine_sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), **extra}
        # the sidecar last: an engine without one is never trusted
        _atomic_write(path.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
        return path

    def entries(self, model_id: str) -> list[dict[str, Any]]:
        """Metadata of every cached engine of this model (any machine, any TensorRT)."""
        out = []
        directory = self.model_dir(model_id)
        if not directory.is_dir():
            return out
        for meta_path in sorted(directory.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                meta = {"key": {}, "error": "unreadable metadata"}
            meta["path"] = str(meta_path.with_suffix(".engine"))
            out.append(meta)
        return out

    def explain_missing(self, model_id: str, key: EngineKey) -> str:
        """Why no engine fits `key`: what the cached engines of this graph were built for instead."""
        others = [e for e in self.entries(model_id) if e.get("key", {}).get("graph") == key.graph]
        if not others:
            return f"no engine for {key.graph} of model {model_id[:12]} in {self.model_dir(model_id)}"
        lines = [f"{e['path']}: " + "; ".join(key.differences(e.get("key", {}))) for e in others]
        return f"no cached engine for {key.graph} fits; found " + " | ".join(lines)
