"""Export a trained neural encoder to a model bundle (protocols/bundle.py, docs/export.md).

Three graphs leave the trainer, each as ONNX (every backend) and as a torch.export `.pt2`
(the PyTorch reference backend):

* `frame_encoder`: one raw frame (1, H, W) in the microscope's dtype -> features (1, F)
* `temporal`:      features (1, W, F) -> embedding (1, D), probabilities (1, C)
* `whole_window`:  raw frames (1, W, H, W) -> embedding, probabilities (the non-streaming path)

Preprocessing lives inside the graphs: the model's own first layers (pooling, log, per-frame
standardisation) plus a leading Cast from the raw dtype to float32, so a backend is fed exactly
what the microscope sends. The ONNX graphs are traced from float32 inputs and the Cast is
prepended with the ONNX helper API (one known node, `raw_to_float`, that the TensorRT backend
can take off because TensorRT has no uint16 tensors).

Before anything is renamed into place the export runs the ONNX graphs in ONNX Runtime against
the PyTorch model on random raw frames and refuses a bundle that disagrees (the measured
differences are recorded in the manifest). The bundle is written into a temporary directory
next to the target and renamed in one step: a crash leaves no half-written bundle.

An encoder whose embedding is centred per animal also gets `adaptation.json` (its training
config permitting): the online centring the daemon keeps applying while it decodes
(trainer/adaptation.py).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
from torch import Tensor, nn

from protocols.adaptation import ADAPTATION_FILE
from protocols.bundle import (
    FRAME_ENCODER,
    GRAPHS,
    RAW_CAST_NODE,
    SCHEMA_VERSION,
    TEMPORAL,
    WHOLE_WINDOW,
    Bundle,
    Manifest,
    Provenance,
    compute_model_id,
    load_bundle,
    sha256_file,
    write_manifest,
)

from trainer.adaptation import checkpoint_online_centring

log = structlog.get_logger(__name__)

OPSET = 18  # the newest opset TensorRT 10 parses fully; ONNX Runtime takes it too
PARITY_TOLERANCE = 1e-4  # max abs difference ONNX (ORT CPU fp32) vs PyTorch accepted at export
_TORCH_DTYPES = {"uint8": torch.uint8, "uint16": torch.uint16, "float32": torch.float32}
_NUMPY_DTYPES = {"uint8": np.uint8, "uint16": np.uint16, "float32": np.float32}
_RAW_MAX = {"uint8": 255, "uint16": 4095, "float32": 4095.0}  # parity frames: 12-bit PMT counts


class ExportError(ValueError):
    """The model, head or checkpoint cannot be exported; the message says what is wrong."""


# ---------------------------------------------------------------------------------------------
# The exported modules: thin wrappers that fix the graph signatures of docs/contracts.md.


class _ActionHead(nn.Module):
    """Embedding (B, D) -> class probabilities (B, C): the linear head fitted on frozen embeddings."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)

    def forward(self, embedding: Tensor) -> Tensor:
        return torch.softmax(self.linear(embedding), dim=-1)


class _FrameEncoderGraph(nn.Module):
    def __init__(self, frame_encoder: nn.Module, cast_raw: bool) -> None:
        super().__init__()
        self.frame_encoder = frame_encoder
        self.cast_raw = cast_raw

    def forward(self, frame: Tensor) -> Tensor:
        return self.frame_encoder(frame.to(torch.float32) if self.cast_raw else frame)


class _TemporalGraph(nn.Module):
    def __init__(self, temporal: nn.Module, head: _ActionHead) -> None:
        super().__init__()
        self.temporal = temporal
        self.head = head

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        embedding = self.temporal(features)
        return embedding, self.head(embedding)


class _WholeWindowGraph(nn.Module):
    def __init__(self, model: nn.Module, head: _ActionHead, cast_raw: bool) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.cast_raw = cast_raw

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        embedding = self.model(frames.to(torch.float32) if self.cast_raw else frames)
        return embedding, self.head(embedding)


# ---------------------------------------------------------------------------------------------
# ONNX helpers


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporter's third-party chatter (not ours to fix) off the user's terminal."""
    noisy = [logging.getLogger(n) for n in ("torch.onnx", "torch.onnx._internal.exporter._registration", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(torch|onnxscript|onnx)(\.|$)")
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch(\.|$)")
            yield
    finally:
        for lg, level in zip(noisy, levels):
            lg.setLevel(level)


def prepend_raw_cast(path: Path, input_name: str, raw_dtype: str) -> None:
    """Make the graph at `path` take `input_name` in `raw_dtype` by inserting Cast(-> float32) first."""
    import onnx
    from onnx import TensorProto, helper

    elem = {"uint8": TensorProto.UINT8, "uint16": TensorProto.UINT16}[raw_dtype]
    model = onnx.load(str(path))
    graph = model.graph
    (inp,) = [i for i in graph.input if i.name == input_name]
    float_name = f"{input_name}_float32"
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == input_name:
                node.input[k] = float_name
    if any(o.name == input_name for o in graph.output):
        raise ExportError(f"graph {path.name} returns its input {input_name!r} unchanged; cannot add a raw cast")
    graph.node.insert(0, helper.make_node("Cast", [input_name], [float_name], to=TensorProto.FLOAT, name=RAW_CAST_NODE))
    inp.type.tensor_type.elem_type = elem
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _export_onnx(module: nn.Module, example: Tensor, path: Path, input_name: str, output_names: list[str]) -> None:
    with _quiet_exporter():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=[input_name],
            output_names=output_names,
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
        program.save(str(path))


def _export_pt2(module: nn.Module, example: Tensor, path: Path) -> None:
    with _quiet_exporter():
        program = torch.export.export(module, (example,), strict=False)
        torch.export.save(program, str(path))


# ---------------------------------------------------------------------------------------------
# Validation of what we are given


def _check_model(model: nn.Module) -> tuple[int, tuple[int, int]]:
    missing = [a for a in ("frame_encoder", "temporal", "window", "frame_shape") if not hasattr(model, a)]
    if missing:
        raise ExportError(
            f"{type(model).__name__} lacks {', '.join(missing)}; export needs a NeuralEncoder "
            "(frame_encoder, temporal, window, frame_shape; docs/contracts.md)"
        )
    window = int(model.window)
    frame_shape = tuple(int(s) for s in model.frame_shape)
    if window < 1 or len(frame_shape) != 2 or min(frame_shape) < 1:
        raise ExportError(f"model window {window} / frame_shape {frame_shape} are not a valid receptive field")
    return window, (frame_shape[0], frame_shape[1])


def _as_tensor(x: Any, what: str) -> Tensor:
    if isinstance(x, Tensor):
        x = x.detach().cpu()  # e.g. nn.Linear weights straight from a trained head, on any device
    try:
        return torch.as_tensor(np.asarray(x, dtype=np.float32))
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{what} is not a numeric array: {exc}") from None


def _check_head(weight: Tensor, bias: Tensor, class_names: Sequence[str], embedding_dim: int) -> None:
    c = len(class_names)
    if c == 0 or len(set(class_names)) != c:
        raise ExportError(f"class_names must be distinct and non-empty, got {list(class_names)}")
    if weight.ndim != 2 or weight.shape != (c, embedding_dim):
        raise ExportError(
            f"head weight has shape {tuple(weight.shape)}, expected (classes={c}, embedding_dim={embedding_dim})"
        )
    if bias.shape != (c,):
        raise ExportError(f"head bias has shape {tuple(bias.shape)}, expected ({c},)")
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise ExportError("head weight/bias contain NaN or infinity")


# ---------------------------------------------------------------------------------------------
# Parity check with ONNX Runtime (the same graphs the daemon will load)


def _onnx_parity(
    out_dir: Path, graph_modules: Mapping[str, nn.Module], examples: Mapping[str, np.ndarray]
) -> dict[str, float]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    diffs: dict[str, float] = {}
    with torch.inference_mode():
        for graph in GRAPHS:
            session = ort.InferenceSession(str(out_dir / f"{graph}.onnx"), opts, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            got = session.run(None, {name: examples[graph]})
            ref = graph_modules[graph](torch.from_numpy(examples[graph]))
            refs = [ref] if isinstance(ref, Tensor) else list(ref)
            for out, value, expected in zip(session.get_outputs(), got, refs):
                diffs[f"{graph}.{out.name}"] = float(np.max(np.abs(value - expected.numpy())))
    return diffs


# ---------------------------------------------------------------------------------------------
# Provenance


def _project_version() -> str:
    try:
        return importlib.metadata.version("actionloop")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _git_commit() -> str | None:
    """The commit of the source tree doing the export, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
            text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _tool_versions() -> dict[str, str]:
    versions = {"torch": torch.__version__}
    for pkg in ("onnx", "onnxruntime", "onnxscript"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    versions["opset"] = str(OPSET)
    return versions


# ---------------------------------------------------------------------------------------------
# Atomic directory publication


def _publish(tmp_dir: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished `tmp_dir` to `out_dir`; an existing bundle is replaced only if asked."""
    if out_dir.exists() or out_dir.is_symlink():
        if not overwrite:
            raise ExportError(f"{out_dir} already exists; pass overwrite=True (--force) to replace it")
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(tmp_dir, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, out_dir)
    with contextlib.suppress(OSError):  # make the rename durable where the filesystem allows
        fd = os.open(out_dir.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------------
# Public API


def export_model(
    model: nn.Module,
    head_weight: Any,
    head_bias: Any,
    class_names: Sequence[str],
    out_dir: Path | str,
    frame_rate_hz: float,
    *,
    provenance: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    frame_dtype: str = "uint16",
    model_name: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    include_pt2: bool = True,
    parity_tolerance: float = PARITY_TOLERANCE,
    progress: bool = False,
    seed: int = 0,
    adaptation: Mapping[str, Any] | None = None,
) -> Bundle:
    """Export `model` (a NeuralEncoder: `frame_encoder`, `temporal`, `window`, `frame_shape`) plus
    its linear action head (`head_weight` C x D, `head_bias` C) to a bundle at `out_dir`.

    Cheap enough for test fixtures with small frames (e.g. 32 x 32). Returns the loaded,
    verified bundle. Raises `ExportError` for bad arguments or an ONNX/PyTorch mismatch larger
    than `parity_tolerance`; nothing is left at `out_dir` (or next to it) on failure.
    `adaptation`: the content of the bundle's adaptation.json (`OnlineCentring.bundle_record`).
    """
    from tqdm.auto import tqdm

    window, (h, w) = _check_model(model)
    if frame_dtype not in _TORCH_DTYPES:
        raise ExportError(f"frame_dtype {frame_dtype!r} is not supported; use one of {sorted(_TORCH_DTYPES)}")
    if not float(frame_rate_hz) > 0:
        raise ExportError(f"frame_rate_hz must be > 0, got {frame_rate_hz}")
    out_dir = Path(out_dir).expanduser().resolve()
    if (out_dir.exists() or out_dir.is_symlink()) and not overwrite:
        raise ExportError(f"{out_dir} already exists; pass overwrite=True (--force) to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    # Export a CPU copy in eval mode: the caller's model (maybe on a GPU, maybe training) is untouched.
    model = copy.deepcopy(model).cpu().eval()
    cast_raw = frame_dtype != "float32"
    rng = np.random.default_rng(seed)
    raw_np = _NUMPY_DTYPES[frame_dtype]
    frames = rng.integers(0, _RAW_MAX[frame_dtype], size=(1, window, h, w), endpoint=True).astype(raw_np)
    # the extremes too: a dark frame and a saturated one (log1p and standardisation edge cases)
    frames[0, 0] = 0
    if window > 1:
        frames[0, 1] = np.iinfo(raw_np).max if frame_dtype != "float32" else 65535.0
    with torch.inference_mode():
        feats = model.frame_encoder(torch.from_numpy(frames[0].astype(np.float32)))
        if feats.ndim != 2 or feats.shape[0] != window:
            raise ExportError(f"frame_encoder returned shape {tuple(feats.shape)}, expected ({window}, F)")
        feature_dim = int(feats.shape[1])
        embedding = model.temporal(feats.unsqueeze(0))
        if embedding.ndim != 2 or embedding.shape[0] != 1:
            raise ExportError(f"temporal returned shape {tuple(embedding.shape)}, expected (1, D)")
        embedding_dim = int(embedding.shape[1])
    weight, bias = _as_tensor(head_weight, "head weight"), _as_tensor(head_bias, "head bias")
    _check_head(weight, bias, class_names, embedding_dim)
    head = _ActionHead(weight, bias).eval()

    modules: dict[str, nn.Module] = {
        FRAME_ENCODER: _FrameEncoderGraph(model.frame_encoder, cast_raw).eval(),
        TEMPORAL: _TemporalGraph(model.temporal, head).eval(),
        WHOLE_WINDOW: _WholeWindowGraph(model, head, cast_raw).eval(),
    }
    float_modules: dict[str, nn.Module] = {
        FRAME_ENCODER: _FrameEncoderGraph(model.frame_encoder, False).eval(),
        TEMPORAL: modules[TEMPORAL],
        WHOLE_WINDOW: _WholeWindowGraph(model, head, False).eval(),
    }
    examples: dict[str, np.ndarray] = {
        FRAME_ENCODER: frames[:, -1].copy(),
        TEMPORAL: feats.unsqueeze(0).numpy().astype(np.float32),
        WHOLE_WINDOW: frames.copy(),
    }
    io = {
        FRAME_ENCODER: ("frame", ["features"]),
        TEMPORAL: ("features", ["embedding", "probabilities"]),
        WHOLE_WINDOW: ("frames", ["embedding", "probabilities"]),
    }

    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp_dir, 0o755)  # mkdtemp makes it private; the daemon may run as another user
        steps = [(g, "onnx") for g in GRAPHS] + ([(g, "pt2") for g in GRAPHS] if include_pt2 else [])
        bar = tqdm(steps, desc="export", unit="graph", disable=not progress)
        for graph, kind in bar:
            bar.set_postfix_str(f"{graph}.{kind}")
            example = examples[graph]
            if kind == "onnx":
                float_example = torch.from_numpy(example.astype(np.float32))
                path = tmp_dir / f"{graph}.onnx"
                input_name, outputs = io[graph]
                _export_onnx(float_modules[graph], float_example, path, input_name, outputs)
                if cast_raw and graph != TEMPORAL:
                    prepend_raw_cast(path, input_name, frame_dtype)
            else:
                _export_pt2(modules[graph], torch.from_numpy(example), tmp_dir / f"{graph}.pt2")
        bar.close()

        if adaptation is not None:
            (tmp_dir / ADAPTATION_FILE).write_text(json.dumps(dict(adaptation)), encoding="utf-8")
        diffs = _onnx_parity(tmp_dir, modules, examples)
        worst = max(diffs.values())
        if not worst <= parity_tolerance:  # also catches NaN
            raise ExportError(
                f"ONNX graphs disagree with the PyTorch model: max abs difference {worst:.3g} > "
                f"{parity_tolerance:g} ({diffs}); the bundle was not written"
            )

        files = {p.name: sha256_file(p) for p in sorted(tmp_dir.iterdir()) if p.is_file()}
        prov: dict[str, Any] = {
            "project_version": _project_version(),
            "git_commit": _git_commit(),
            "exported_with": _tool_versions(),
        }
        prov.update(provenance or {})
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            model_id=compute_model_id(files),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            model_name=model_name or getattr(model, "registry_name", type(model).__name__),
            model_args=dict(model_args if model_args is not None else getattr(model, "model_args", {})),
            window=window,
            frame_rate_hz=float(frame_rate_hz),
            frame_shape=(h, w),
            frame_dtype=frame_dtype,  # type: ignore[arg-type]
            feature_dim=feature_dim,
            embedding_dim=embedding_dim,
            class_names=tuple(class_names),
            preprocessing=dict(preprocessing if preprocessing is not None else _model_preprocessing(model)),
            provenance=Provenance.model_validate(prov),
            export_check=diffs,
            files=files,
        )
        _fsync_tree(tmp_dir)
        write_manifest(tmp_dir, manifest)
        load_bundle(tmp_dir)  # the reader's own checks, before anyone can see the bundle
        _publish(tmp_dir, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    bundle = load_bundle(out_dir)
    log.info(
        "bundle exported", path=str(out_dir), model_id=bundle.model_id[:12], window=window,
        frame_shape=[h, w], max_abs_diff=worst,
    )
    return bundle


def _model_preprocessing(model: nn.Module) -> dict[str, Any]:
    describe = getattr(model, "preprocessing", None)
    return dict(describe()) if callable(describe) else {}


CHECKPOINT_KEYS = ("model_name", "model_args", "state_dict", "head", "class_names", "window", "frame_shape", "frame_rate_hz")


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Read a training checkpoint (docs/contracts.md, "Checkpoint") without unpickling code."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ExportError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise ExportError(f"checkpoint {path} cannot be read: {exc}") from None
    if not isinstance(ckpt, dict):
        raise ExportError(f"checkpoint {path} holds a {type(ckpt).__name__}, expected a dict")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise ExportError(f"checkpoint {path} lacks {', '.join(missing)} (see docs/contracts.md)")
    head = ckpt["head"]
    if not isinstance(head, Mapping) or "weight" not in head or "bias" not in head:
        raise ExportError(f"checkpoint {path}: head must be {{'weight': C x D, 'bias': C}}")
    return ckpt


def export_checkpoint(
    checkpoint: Path | str, out_dir: Path | str, *, overwrite: bool = False, progress: bool = False,
    calibration_trials: Sequence[Path | str] = (), animal: str | None = None, accept_calibration: bool = False,
) -> Bundle:
    """Rebuild the encoder from a checkpoint, load its weights, and export it with its head.

    An encoder with session normalisation decodes one animal: give `calibration_trials` (a
    recording of that animal, no labels needed; its field of view is aligned to the checkpoint's
    template and its pixel baseline measured) or `animal` (one the checkpoint trained on). A new
    animal's calibration that looks unreliable (`trainer.calibration.calibration_quality`) is
    refused unless `accept_calibration`; the bundle records its quality either way."""
    from trainer.models import build_model

    ckpt = load_checkpoint(checkpoint)
    try:
        model = build_model(ckpt["model_name"], **dict(ckpt["model_args"]))
    except ValueError as exc:
        raise ExportError(f"checkpoint {checkpoint}: {exc}") from None
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ExportError(f"checkpoint {checkpoint}: weights do not fit {ckpt['model_name']}: {exc}") from None
    window, frame_shape = _check_model(model)
    if int(ckpt["window"]) != window or tuple(int(s) for s in ckpt["frame_shape"]) != frame_shape:
        raise ExportError(
            f"checkpoint {checkpoint}: window/frame_shape {ckpt['window']}/{list(ckpt['frame_shape'])} "
            f"disagree with the rebuilt model's {window}/{list(frame_shape)}"
        )
    calibration = _session_calibration(model, ckpt, checkpoint, calibration_trials, animal, accept_calibration)
    centring = checkpoint_online_centring(ckpt) if calibration else None
    provenance = {
        **({"session_calibration": calibration} if calibration else {}),
        "source_checkpoint": str(Path(checkpoint).expanduser().resolve()),
        "dataset_fingerprint": ckpt.get("dataset_fingerprint"),
        "metrics": _json_safe(ckpt.get("metrics") or {}),
        "training_config": _json_safe(ckpt.get("config") or {}),
    }
    for key in ("git_commit", "project_version"):  # trust the trainer's record of its own run
        if ckpt.get(key):
            provenance[f"training_{key}"] = ckpt[key]
    return export_model(
        model,
        ckpt["head"]["weight"],
        ckpt["head"]["bias"],
        list(ckpt["class_names"]),
        out_dir,
        float(ckpt["frame_rate_hz"]),
        provenance=provenance,
        preprocessing=model.preprocessing() if calibration else (ckpt.get("preprocessing") or None),
        frame_dtype=str(ckpt.get("frame_dtype", "uint16")),
        model_name=str(ckpt["model_name"]),
        model_args=dict(ckpt["model_args"]),
        overwrite=overwrite,
        progress=progress,
        adaptation=centring.bundle_record(ckpt["head"]["weight"], ckpt["head"]["bias"]) if centring else None,
    )


def _session_calibration(model: nn.Module, ckpt: Mapping[str, Any], checkpoint: Path | str,
                         trials: Sequence[Path | str], animal: str | None,
                         accept: bool = False) -> dict[str, Any] | None:
    """Install the calibration of the animal to decode in a session-normalised encoder; returns
    what the bundle records about it (None for other encoders)."""
    from trainer.calibration import CalibrationSet, calibrate_encoder, calibration_quality, pooled_frames_of_trials

    session = model.frame_encoder.session  # type: ignore[union-attr]
    if session is None:
        if trials or animal:
            raise ExportError(f"checkpoint {checkpoint}: its encoder does not use session calibration "
                              "(normalise is not 'session'); drop --calibrate/--animal")
        return None
    stored = CalibrationSet.from_checkpoint(ckpt)
    if stored is None:
        raise ExportError(f"checkpoint {checkpoint}: session-normalised encoder without a stored calibration template")
    known = sorted(stored.animals)
    if bool(trials) == bool(animal):
        raise ExportError(
            f"checkpoint {checkpoint}: its encoder is calibrated per animal; give either --calibrate "
            f"TRIAL.h5 ... (a recording of the animal the bundle will decode) or --animal NAME (one of {known})")
    if animal:
        if animal not in stored.animals:
            raise ExportError(f"checkpoint {checkpoint}: no stored calibration for animal {animal!r}; "
                              f"it has {known} (calibrate a new animal with --calibrate)")
        cal, source = stored.animals[animal], {"animal": animal, "from": "training"}
    else:
        paths = [Path(p) for p in trials]
        try:
            name, pooled = pooled_frames_of_trials(paths, model.frame_encoder)  # type: ignore[union-attr]
            cal = calibrate_encoder(model, pooled, stored.template)
        except (ValueError, OSError) as exc:
            raise ExportError(f"calibration recording: {exc}") from None
        quality = calibration_quality(cal, stored)
        source = {"animal": name, "from": [str(p) for p in paths], "quality": quality}
        if quality["warnings"]:
            if not accept:
                raise ExportError("calibration of " + name + " looks unreliable: " + "; ".join(quality["warnings"]) +
                                  " (check the recording, or export anyway with --accept-calibration)")
            log.warning("calibration accepted despite warnings", animal=name, warnings=quality["warnings"])
    try:
        model.set_calibration(cal)  # type: ignore[operator]
    except ValueError as exc:
        raise ExportError(f"checkpoint {checkpoint}: {exc}") from None
    return {**source, **cal.summary()}


def _json_safe(value: Any) -> Any:
    """Metrics/config as plain JSON (tensors and numpy scalars become numbers/lists)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
