"""The model bundle: one self-describing directory that carries a trained encoder to the daemon.

Layout (docs/contracts.md, "Model bundle")::

    BUNDLE/
      manifest.json          pydantic-validated description + sha256 of every file below
      frame_encoder.onnx     frame     (1, H, W) raw dtype  -> features (1, F)
      temporal.onnx          features  (1, W, F) float32    -> embedding (1, D), probabilities (1, C)
      whole_window.onnx      frames    (1, W, H, W) raw     -> embedding (1, D), probabilities (1, C)
      *.pt2                  torch.export copies of the same three graphs (reference backend)
      adaptation.json        optional: online centring while decoding (protocols/adaptation.py)

`load_bundle` refuses anything that is not exactly what its manifest says: unknown schema,
invalid manifest, missing file, wrong checksum, model id that does not match the files, or
ONNX graphs whose inputs/outputs disagree with the manifest. The daemon never starts on a
half-valid model. This module imports no torch (the daemon must not need it); ONNX is
imported lazily, only to check graph signatures.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocols.adaptation import ADAPTATION_FILE, OnlineCentringRecord, read_adaptation

SCHEMA_VERSION = 1
"""Bumped whenever a reader of the previous version could misread a new bundle."""

BUNDLE_FORMAT = "actionloop-model-bundle"
MANIFEST_NAME = "manifest.json"

FRAME_ENCODER = "frame_encoder"
TEMPORAL = "temporal"
WHOLE_WINDOW = "whole_window"
GRAPHS = (FRAME_ENCODER, TEMPORAL, WHOLE_WINDOW)
REQUIRED_FILES = tuple(f"{g}.onnx" for g in GRAPHS)
TORCH_FILES = tuple(f"{g}.pt2" for g in GRAPHS)
RAW_CAST_NODE = "raw_to_float"
"""Name of the first node of frame_encoder.onnx / whole_window.onnx: Cast(raw dtype -> float32).
Backends without the raw dtype (TensorRT has no uint16) take it off and feed float32 instead."""

FrameDType = Literal["uint8", "uint16", "float32"]

BundleErrorReason = Literal[
    "not_found", "manifest", "schema", "missing_file", "checksum", "model_id", "graph", "adaptation"
]


class BundleError(ValueError):
    """A bundle that cannot be used. `reason` is a stable short code, the message says what to fix."""

    def __init__(self, reason: BundleErrorReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Provenance(BaseModel):
    """Where the model came from: enough to find the run that made it."""

    model_config = ConfigDict(extra="allow", frozen=True)

    project_version: str = "unknown"
    git_commit: str | None = None
    dataset_fingerprint: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    source_checkpoint: str | None = None
    exported_with: dict[str, str] = Field(default_factory=dict)


class Manifest(BaseModel):
    """Everything the daemon sizes itself from. Never hand-set these values a second time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["actionloop-model-bundle"] = BUNDLE_FORMAT
    schema_version: int
    model_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: str
    model_name: str
    model_args: dict[str, Any] = Field(default_factory=dict)
    window: int = Field(ge=1, description="receptive field in neural frames")
    frame_rate_hz: float = Field(gt=0, description="neural frame rate the model was trained at")
    frame_shape: tuple[int, int]
    frame_dtype: FrameDType
    feature_dim: int = Field(ge=1)
    embedding_dim: int = Field(ge=1)
    class_names: tuple[str, ...]
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    provenance: Provenance = Field(default_factory=Provenance)
    export_check: dict[str, float] = Field(
        default_factory=dict, description="max abs differences measured at export (ONNX vs PyTorch)"
    )
    files: dict[str, str]

    @field_validator("frame_shape")
    @classmethod
    def _positive_shape(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 1:
            raise ValueError(f"frame_shape must be positive, got {list(v)}")
        return v

    @field_validator("class_names")
    @classmethod
    def _distinct_classes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("class_names is empty")
        if len(set(v)) != len(v) or any(not name for name in v):
            raise ValueError(f"class_names must be distinct and non-empty, got {list(v)}")
        return v

    @field_validator("files")
    @classmethod
    def _plain_names_and_hashes(cls, v: dict[str, str]) -> dict[str, str]:
        for name, digest in v.items():
            # a bundle names only its own files: no directories, no way out of the bundle
            if not name or any(c in name for c in "/\\\0") or name in (".", "..") or name == MANIFEST_NAME:
                raise ValueError(f"file name {name!r} is not a plain file name of the bundle")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"sha256 of {name!r} is not 64 lowercase hex digits: {digest!r}")
        return v

    @model_validator(mode="after")
    def _required_files_listed(self) -> Manifest:
        missing = [name for name in REQUIRED_FILES if name not in self.files]
        if missing:
            raise ValueError(f"files does not list {', '.join(missing)}")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def graph_signature(self, graph: str) -> dict[str, list[tuple[str, str, tuple[int, ...]]]]:
        """Expected `{"inputs": [(name, dtype, shape)], "outputs": [...]}` of one graph (batch 1)."""
        h, w = self.frame_shape
        outputs = [
            ("embedding", "float32", (1, self.embedding_dim)),
            ("probabilities", "float32", (1, self.num_classes)),
        ]
        if graph == FRAME_ENCODER:
            return {
                "inputs": [("frame", self.frame_dtype, (1, h, w))],
                "outputs": [("features", "float32", (1, self.feature_dim))],
            }
        if graph == TEMPORAL:
            return {"inputs": [("features", "float32", (1, self.window, self.feature_dim))], "outputs": outputs}
        if graph == WHOLE_WINDOW:
            return {"inputs": [("frames", self.frame_dtype, (1, self.window, h, w))], "outputs": outputs}
        raise KeyError(f"unknown graph {graph!r}; graphs are {', '.join(GRAPHS)}")


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def compute_model_id(files: dict[str, str]) -> str:
    """The model id: sha256 over the sorted `name:sha256` lines, so it changes with any file."""
    lines = "".join(f"{name}:{files[name]}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Write `manifest.json` (temp name + fsync + rename, so a reader never sees half of it)."""
    path = Path(directory) / MANIFEST_NAME
    tmp = path.with_name(f".{MANIFEST_NAME}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(manifest.model_dump_json(indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk. Build with `load_bundle`, not directly."""

    path: Path
    manifest: Manifest
    adaptation: OnlineCentringRecord | None = None  # adaptation.json, where the bundle has one

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    @property
    def window(self) -> int:
        return self.manifest.window

    @property
    def frame_shape(self) -> tuple[int, int]:
        return self.manifest.frame_shape

    @property
    def frame_dtype(self) -> str:
        return self.manifest.frame_dtype

    @property
    def feature_dim(self) -> int:
        return self.manifest.feature_dim

    @property
    def embedding_dim(self) -> int:
        return self.manifest.embedding_dim

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.manifest.class_names

    @property
    def num_classes(self) -> int:
        return self.manifest.num_classes

    @property
    def frame_rate_hz(self) -> float:
        return self.manifest.frame_rate_hz

    def has_file(self, name: str) -> bool:
        return name in self.manifest.files

    def file(self, name: str) -> Path:
        """Path of a file the manifest lists (verified at load time)."""
        if name not in self.manifest.files:
            raise BundleError("missing_file", f"{self.path}: the manifest lists no file {name!r}")
        return self.path / name

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "path": str(self.path),
            "model_id": m.model_id,
            "model_name": m.model_name,
            "window": m.window,
            "frame_rate_hz": m.frame_rate_hz,
            "frame_shape": list(m.frame_shape),
            "frame_dtype": m.frame_dtype,
            "feature_dim": m.feature_dim,
            "embedding_dim": m.embedding_dim,
            "class_names": list(m.class_names),
            "online_centring": None if self.adaptation is None else {
                "prior_frames": self.adaptation.prior_frames,
                "time_constant_frames": self.adaptation.time_constant_frames},
        }


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(manifest)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _read_manifest(path: Path) -> Manifest:
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError("missing_file", f"{path}: no {MANIFEST_NAME}; not a model bundle (or an unfinished export)")
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError("manifest", f"{manifest_path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise BundleError("manifest", f"{manifest_path}: expected a JSON object, got {type(raw).__name__}")
    if raw.get("format") != BUNDLE_FORMAT:
        raise BundleError("manifest", f"{manifest_path}: format is {raw.get('format')!r}, expected {BUNDLE_FORMAT!r}")
    # The schema version is checked before anything else: a newer bundle may differ anywhere.
    version = raw.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError("schema", f"{manifest_path}: schema_version is missing or not an integer ({version!r})")
    if version != SCHEMA_VERSION:
        hint = "upgrade actionloop" if version > SCHEMA_VERSION else "re-export the checkpoint with this actionloop"
        raise BundleError(
            "schema",
            f"{manifest_path}: bundle schema version {version} is not supported "
            f"(this actionloop reads version {SCHEMA_VERSION}); {hint}",
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError("manifest", f"{manifest_path}: invalid manifest: {_format_validation_error(exc)}") from None


def _verify_files(path: Path, manifest: Manifest) -> None:
    for name, expected in sorted(manifest.files.items()):
        file_path = path / name
        if not file_path.is_file():
            raise BundleError("missing_file", f"{path}: file {name!r} listed in the manifest is missing")
        actual = sha256_file(file_path)
        if actual != expected:
            raise BundleError(
                "checksum",
                f"{path}: checksum mismatch for {name!r}: manifest says sha256 {expected[:16]}..., "
                f"file has {actual[:16]}... (corrupt or modified after export)",
            )
    model_id = compute_model_id(manifest.files)
    if model_id != manifest.model_id:
        raise BundleError(
            "model_id",
            f"{path}: model_id {manifest.model_id[:16]}... does not match its files ({model_id[:16]}...); "
            "the manifest was edited after export",
        )


_ONNX_DTYPES = {1: "float32", 2: "uint8", 4: "uint16", 10: "float16", 6: "int32", 7: "int64"}


def _value_info(values: Any) -> list[tuple[str, str, tuple[int | str, ...]]]:
    out = []
    for v in values:
        tensor_type = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim)
        out.append((v.name, _ONNX_DTYPES.get(tensor_type.elem_type, f"onnx-type-{tensor_type.elem_type}"), dims))
    return out


def _verify_graphs(path: Path, manifest: Manifest) -> None:
    import onnx  # lazily: only bundle loading needs it

    for graph in GRAPHS:
        name = f"{graph}.onnx"
        try:
            model = onnx.load(str(path / name), load_external_data=False)
        except Exception as exc:  # protobuf raises several types for garbage
            raise BundleError("graph", f"{path}: {name} is not a readable ONNX model ({exc})") from None
        # Weights live inside the graph: an external-data reference would make a backend read a
        # file the manifest does not list (and so does not checksum), wherever it points.
        external = [t.name for t in _all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
        if external:
            raise BundleError(
                "graph",
                f"{path}: {name} keeps tensors in external data ({', '.join(external[:3])}); a bundle's graphs "
                "carry their own weights (re-export it)",
            )
        expected = manifest.graph_signature(graph)
        initializers = {init.name for init in model.graph.initializer}
        actual = {
            "inputs": _value_info(i for i in model.graph.input if i.name not in initializers),
            "outputs": _value_info(model.graph.output),
        }
        for kind in ("inputs", "outputs"):
            want = [(n, d, tuple(s)) for n, d, s in expected[kind]]
            if actual[kind] != want:
                raise BundleError(
                    "graph",
                    f"{path}: {name} {kind} are {_describe(actual[kind])}, but the manifest implies "
                    f"{_describe(want)} (window {manifest.window}, frame {list(manifest.frame_shape)} "
                    f"{manifest.frame_dtype}, F={manifest.feature_dim}, D={manifest.embedding_dim}, "
                    f"C={manifest.num_classes})",
                )


def _all_tensors(model: Any) -> list[Any]:
    """Every tensor of an ONNX model: initializers and node attributes, subgraphs included."""
    tensors: list[Any] = []

    def visit(graph: Any) -> None:
        tensors.extend(graph.initializer)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    tensors.append(attribute.t)
                tensors.extend(attribute.tensors)
                if attribute.HasField("g"):
                    visit(attribute.g)
                for subgraph in attribute.graphs:
                    visit(subgraph)

    visit(model.graph)
    return tensors


def _describe(values: list[tuple[str, str, tuple[Any, ...]]]) -> str:
    return ", ".join(f"{n} {d}[{'x'.join(str(s) for s in shape)}]" for n, d, shape in values) or "(none)"


def load_bundle(path: Path | str, *, check_graphs: bool = True) -> Bundle:
    """Load and verify a bundle: manifest, schema version, every file's sha256, the model id and
    (unless `check_graphs=False`) the ONNX graphs' input/output names, dtypes and shapes.

    Raises `BundleError` (a `ValueError`) whose message names the bundle and what is wrong.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise BundleError("not_found", f"model bundle {path} does not exist")
    if not path.is_dir():
        raise BundleError("not_found", f"model bundle {path} is not a directory")
    manifest = _read_manifest(path)
    _verify_files(path, manifest)
    if check_graphs:
        _verify_graphs(path, manifest)
    adaptation = None
    if ADAPTATION_FILE in manifest.files:
        try:
            adaptation = read_adaptation(path / ADAPTATION_FILE, manifest.num_classes, manifest.embedding_dim)
        except ValueError as exc:
            raise BundleError("adaptation", f"{path}: {exc}") from None
    return Bundle(path=path.resolve(), manifest=manifest, adaptation=adaptation)
