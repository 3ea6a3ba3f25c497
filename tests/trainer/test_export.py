"""trainer.export and `actionloop export`: checkpoint -> verified bundle, raw-dtype graphs, parity,
atomic writes, and clear refusals."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import structlog
import torch

import trainer.export as export
from protocols.bundle import REQUIRED_FILES, TORCH_FILES, load_bundle
from tools.cli import main as _cli_main
from trainer.export import ExportError, export_model
from trainer.models import build_model

CLASSES = ["forward_walking", "backward_walking", "resting"]
MODEL_ARGS = {
    "frame_shape": [24, 32], "window": 3, "downsample": 2, "channels": [4, 8], "features": 8,
    "temporal_channels": 8, "embedding_dim": 6,
}


def cli_main(argv: list[str]) -> int:
    """`actionloop ARGS...` in-process. The entry point configures structlog/logging onto the
    current sys.stderr (a pytest capture file); restore the previous set-up afterwards so later
    tests do not log into a closed file."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return _cli_main(argv)
    finally:
        structlog.configure(**saved)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def _model() -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model("neural_conv", **MODEL_ARGS).eval()


def _head(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0, 0.5, (len(CLASSES), 6)).astype(np.float32), rng.normal(0, 0.1, len(CLASSES)).astype(np.float32)


def _checkpoint(path: Path) -> dict:
    model = _model()
    weight, bias = _head(np.random.default_rng(2))
    ckpt = {
        "model_name": "neural_conv",
        "model_args": model.model_args,
        "state_dict": model.state_dict(),
        "head": {"weight": torch.from_numpy(weight), "bias": torch.from_numpy(bias)},
        "class_names": CLASSES,
        "window": 3,
        "frame_shape": [24, 32],
        "frame_dtype": "uint16",
        "frame_rate_hz": 15.0,
        "preprocessing": model.preprocessing(),
        "dataset_fingerprint": "sha256:abc123",
        "metrics": {"probe_accuracy": torch.tensor(0.75), "per_class": [0.5, 0.25]},
        "config": {"epochs": 2, "lr": 1e-3},
    }
    torch.save(ckpt, path)
    return ckpt


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    """A checkpoint exported through the real command line."""
    root = tmp_path_factory.mktemp("export")
    ckpt = _checkpoint(root / "model.pt")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = cli_main(["export", "--checkpoint", str(root / "model.pt"), "--out", str(root / "bundle")])
    assert rc == 0
    (root / "stdout.json").write_text(stdout.getvalue())
    return root / "bundle", ckpt, root


def test_cli_export_writes_a_verified_self_describing_bundle(exported) -> None:
    bundle_dir, ckpt, root = exported
    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    assert (m.window, m.frame_shape, m.frame_dtype, m.frame_rate_hz) == (3, (24, 32), "uint16", 15.0)
    assert (m.feature_dim, m.embedding_dim, list(m.class_names)) == (8, 6, CLASSES)
    assert m.model_name == "neural_conv" and m.model_args == ckpt["model_args"]
    assert m.preprocessing["downsample"]["factor"] == 2 and m.preprocessing["inside_graph"] is True
    assert set(m.files) == set(REQUIRED_FILES) | set(TORCH_FILES)
    p = m.provenance
    assert p.dataset_fingerprint == "sha256:abc123"
    assert p.metrics == {"probe_accuracy": 0.75, "per_class": [0.5, 0.25]}
    assert p.source_checkpoint == str((root / "model.pt").resolve())
    assert p.exported_with["torch"] == torch.__version__ and p.exported_with["opset"] == str(export.OPSET)
    assert p.model_extra["training_config"] == {"epochs": 2, "lr": 1e-3}
    assert m.export_check and max(m.export_check.values()) <= export.PARITY_TOLERANCE
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_graphs_take_raw_uint16_frames_through_a_leading_cast(exported) -> None:
    bundle_dir, _, _ = exported
    for name, input_name in (("frame_encoder.onnx", "frame"), ("whole_window.onnx", "frames")):
        graph = onnx.load(str(bundle_dir / name)).graph
        assert [i.name for i in graph.input if i.name == input_name] == [input_name]
        (inp,) = [i for i in graph.input if i.name == input_name]
        assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT16
        assert graph.node[0].op_type == "Cast" and graph.node[0].name == export.RAW_CAST_NODE
    temporal = onnx.load(str(bundle_dir / "temporal.onnx")).graph
    assert temporal.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_onnx_graphs_match_the_checkpointed_model(exported) -> None:
    """Raw frames the export never saw, extremes included: ONNX Runtime vs the rebuilt PyTorch model."""
    bundle_dir, ckpt, _ = exported
    model = build_model("neural_conv", **ckpt["model_args"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    weight, bias = ckpt["head"]["weight"], ckpt["head"]["bias"]
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 65535, size=(1, 3, 24, 32), endpoint=True).astype(np.uint16)
    frames[0, 1] = 0
    encoder = ort.InferenceSession(str(bundle_dir / "frame_encoder.onnx"), providers=["CPUExecutionProvider"])
    temporal = ort.InferenceSession(str(bundle_dir / "temporal.onnx"), providers=["CPUExecutionProvider"])
    whole = ort.InferenceSession(str(bundle_dir / "whole_window.onnx"), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        x = torch.from_numpy(frames.astype(np.float32))
        ref_features = model.frame_encoder(x[0]).numpy()
        ref_embedding = model(x)
        ref_probabilities = torch.softmax(ref_embedding @ weight.T + bias, dim=-1).numpy()
        ref_embedding = ref_embedding.numpy()
    features = np.concatenate([encoder.run(None, {"frame": frames[:, t]})[0] for t in range(3)])
    streamed = temporal.run(None, {"features": features[None]})
    whole_out = whole.run(None, {"frames": frames})
    diffs = {
        "features": np.abs(features - ref_features).max(),
        "temporal.embedding": np.abs(streamed[0] - ref_embedding).max(),
        "temporal.probabilities": np.abs(streamed[1] - ref_probabilities).max(),
        "whole.embedding": np.abs(whole_out[0] - ref_embedding).max(),
        "whole.probabilities": np.abs(whole_out[1] - ref_probabilities).max(),
    }
    assert max(diffs.values()) <= 1e-4, diffs


def test_existing_bundle_is_not_replaced_without_force(exported, capsys: pytest.CaptureFixture) -> None:
    bundle_dir, _, root = exported
    before = (bundle_dir / "manifest.json").read_bytes()
    rc = cli_main(["export", "--checkpoint", str(root / "model.pt"), "--out", str(bundle_dir)])
    assert rc == 1
    assert "already exists" in capsys.readouterr().err
    assert (bundle_dir / "manifest.json").read_bytes() == before


def test_missing_or_incomplete_checkpoint_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = cli_main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "b")])
    assert rc == 1 and "nope.pt does not exist" in capsys.readouterr().err
    torch.save({"model_name": "neural_conv", "state_dict": {}}, tmp_path / "partial.pt")
    with pytest.raises(ExportError, match="lacks model_args, head, class_names"):
        export.export_checkpoint(tmp_path / "partial.pt", tmp_path / "b")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="cannot be read"):
        export.export_checkpoint(tmp_path / "garbage.pt", tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_checkpoint_weights_must_fit_the_model(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "model.pt")
    ckpt["model_args"] = {**ckpt["model_args"], "features": 16}
    torch.save(ckpt, tmp_path / "model.pt")
    with pytest.raises(ExportError, match="weights do not fit neural_conv"):
        export.export_checkpoint(tmp_path / "model.pt", tmp_path / "b")


@pytest.mark.parametrize(
    "weight_shape, bias_shape, classes, message",
    [
        ((3, 5), (3,), CLASSES, r"head weight has shape \(3, 5\), expected \(classes=3, embedding_dim=6\)"),
        ((3, 6), (4,), CLASSES, r"head bias has shape \(4,\), expected \(3,\)"),
        ((2, 6), (2,), ["a", "a"], "distinct"),
    ],
)
def test_bad_head_is_refused_before_anything_is_written(
    tmp_path: Path, weight_shape: tuple, bias_shape: tuple, classes: list, message: str
) -> None:
    with pytest.raises(ExportError, match=message):
        export_model(_model(), np.zeros(weight_shape), np.zeros(bias_shape), classes, tmp_path / "b", 30.0)
    assert list(tmp_path.iterdir()) == []


def test_not_a_neural_encoder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="lacks frame_encoder, temporal, window, frame_shape"):
        export_model(torch.nn.Linear(2, 2), np.zeros((1, 2)), np.zeros(1), ["a"], tmp_path / "b", 30.0)


def test_failure_midway_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing_export(*args, **kwargs) -> None:
        calls.append(args)
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(export, "_export_onnx", failing_export)
    weight, bias = _head(np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_model(_model(), weight, bias, CLASSES, tmp_path / "b", 30.0)
    assert calls and list(tmp_path.iterdir()) == []


def test_onnx_pytorch_disagreement_refuses_the_bundle(tmp_path: Path) -> None:
    """The export's own parity check guards the daemon; a tolerance nothing can meet proves it bites.
    Also: a head straight from nn.Linear (requires grad) is taken, and the caller's model keeps its mode."""
    head = torch.nn.Linear(6, len(CLASSES))
    model = _model().train()
    with pytest.raises(ExportError, match="disagree with the PyTorch model"):
        export_model(model, head.weight, head.bias, CLASSES, tmp_path / "b", 30.0, include_pt2=False, parity_tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []
    assert model.training


def test_publish_replaces_an_old_bundle_only_when_asked(tmp_path: Path) -> None:
    old, new = tmp_path / "bundle", tmp_path / ".bundle.tmp-1"
    old.mkdir()
    (old / "manifest.json").write_text("old")
    new.mkdir()
    (new / "manifest.json").write_text("new")
    with pytest.raises(ExportError, match="already exists"):
        export._publish(new, old, overwrite=False)
    export._publish(new, old, overwrite=True)
    assert (old / "manifest.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_cli_prints_the_bundle_summary(exported) -> None:
    _, _, root = exported
    summary = json.loads((root / "stdout.json").read_text())
    assert summary["window"] == 3 and summary["class_names"] == CLASSES
    assert summary["export_check_max_abs_diff"] <= export.PARITY_TOLERANCE


def test_trained_checkpoint_exports_and_serves(trainer_dataset: Path, fast_overrides: list[str], tmp_path: Path) -> None:
    """The whole path on a real (tiny) training run: train -> export -> load -> stream on ONNX
    Runtime, agreeing with the trained encoder and its fitted head."""
    from decoder.backends import create_backend
    from decoder.streaming import StreamingDecoder
    from trainer.config import load_config
    from trainer.train import train

    from trainer.calibration import CalibrationSet

    result = train(load_config("tiny", fast_overrides), trainer_dataset, tmp_path / "run")
    assert cli_main(["export", "--checkpoint", str(result.checkpoint), "--out", str(tmp_path / "bundle"),
                     "--animal", "animal1"]) == 0
    ckpt = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.manifest.provenance.dataset_fingerprint == ckpt["dataset_fingerprint"]
    assert list(bundle.class_names) == list(ckpt["class_names"])
    model = build_model(ckpt["model_name"], **ckpt["model_args"])
    model.load_state_dict(ckpt["state_dict"])
    calibration = CalibrationSet.from_checkpoint(ckpt).animals["animal1"]
    assert not calibration.alignment.is_identity()  # the graph must carry a real alignment
    assert calibration.embedding_mean is not None  # the default centres the embedding per animal
    model.set_calibration(calibration)  # alignment, baseline and per-animal normalisation
    model.eval()
    backend = create_backend("onnxruntime", bundle)
    try:
        stream = StreamingDecoder(backend)
        w = bundle.window
        frames = np.random.default_rng(5).integers(0, 3000, size=(w + 6, *bundle.frame_shape)).astype(np.uint16)
        worst = 0.0
        for i, frame in enumerate(frames):
            probabilities = stream.push(frame)
            if probabilities is None:
                continue
            with torch.inference_mode():
                embedding = model(torch.from_numpy(frames[i - w + 1 : i + 1].astype(np.float32))[None])
                expected = torch.softmax(embedding @ ckpt["head"]["weight"].T + ckpt["head"]["bias"], dim=-1)[0]
            worst = max(worst, float(np.abs(probabilities - expected.numpy()).max()))
        assert worst <= 1e-4, worst
    finally:
        backend.close()


@pytest.fixture(scope="module")
def session_checkpoint(trainer_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-calibrated checkpoint trained on animal0 and animal1 only (animal2 is new to it)."""
    from trainer.config import load_config
    from trainer.train import train

    overrides = ["progress=false", "threads=1", "model.pooled_size=16", "model.channels=[4, 8]",
                 "model.features=8", "model.temporal_channels=8", "model.embedding_dim=8",
                 "model.projection_dim=8", "model.pose_channels=8", "model.window=4", "optim.epochs=1",
                 "optim.steps_per_epoch=2", "optim.batch_size=16", "swap.k=4",
                 'data.exclude_animals=["animal2"]']
    return train(load_config("tiny", overrides), trainer_dataset, tmp_path_factory.mktemp("session") / "run").checkpoint


def test_session_checkpoint_needs_the_animal_to_decode(session_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="--calibrate TRIAL.h5 .* or --animal NAME"):
        export.export_checkpoint(session_checkpoint, tmp_path / "a")
    with pytest.raises(ExportError, match="no stored calibration for animal 'animal2'"):
        export.export_checkpoint(session_checkpoint, tmp_path / "b", animal="animal2")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_new_animal_is_calibrated_from_its_own_recording(
    session_checkpoint: Path, trainer_dataset: Path, tmp_path: Path
) -> None:
    """An animal the model never saw gets its bundle from an unlabelled recording: the
    calibration is measured, recorded in the manifest, and inside the verified graphs."""
    trial = trainer_dataset / "a2_t1.h5"
    rc = cli_main(["export", "--checkpoint", str(session_checkpoint), "--out", str(tmp_path / "bundle"),
                   "--calibrate", str(trial)])
    assert rc == 0
    bundle = load_bundle(tmp_path / "bundle")
    manifest = bundle.manifest
    # the default centres the embedding per animal, so the bundle asks for online centring with
    # the training config's constants (15 s, 300 s at 16 Hz) and the graphs' own head
    assert "adaptation.json" in manifest.files and bundle.adaptation is not None
    assert (bundle.adaptation.prior_frames, bundle.adaptation.time_constant_frames) == (240, 4800)
    head = torch.load(session_checkpoint, map_location="cpu", weights_only=True)["head"]
    np.testing.assert_allclose(np.array(bundle.adaptation.head_weight), head["weight"].numpy(), atol=1e-7)
    recorded = manifest.provenance.model_dump()["session_calibration"]
    assert recorded["animal"] == "animal2" and recorded["from"] == [str(trial)] and recorded["frames"] == 64
    assert manifest.preprocessing["session_calibration"]["scale"] == recorded["scale"]
    assert max(manifest.export_check.values()) <= export.PARITY_TOLERANCE
    # trials of two animals are not one calibration
    with pytest.raises(ExportError, match="several animals"):
        export.export_checkpoint(session_checkpoint, tmp_path / "mixed",
                                 calibration_trials=[trial, trainer_dataset / "a0_t0.h5"])


def test_an_unreliable_calibration_is_refused_unless_accepted(
    session_checkpoint: Path, trainer_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new animal whose fit scores far below the training animals is refused by default and
    exported with --accept-calibration; the bundle records the fit's quality either way."""
    import trainer.calibration as calibration

    trial = trainer_dataset / "a2_t1.h5"
    good = tmp_path / "good"
    assert cli_main(["export", "--checkpoint", str(session_checkpoint), "--out", str(good), "--calibrate", str(trial)]) == 0
    quality = load_bundle(good).manifest.provenance.model_dump()["session_calibration"]["quality"]
    assert quality["warnings"] == [] and 0 < quality["score"] <= 1 and len(quality["training_scores"]) == 2
    # the same recording judged against thresholds it cannot meet
    monkeypatch.setattr(calibration, "SCORE_MARGIN", -1.0)
    monkeypatch.setattr(calibration, "SCORE_RATIO", 2.0)
    with pytest.raises(ExportError, match="looks unreliable: registration score .* --accept-calibration"):
        export.export_checkpoint(session_checkpoint, tmp_path / "refused", calibration_trials=[trial])
    assert not (tmp_path / "refused").exists()
    assert cli_main(["export", "--checkpoint", str(session_checkpoint), "--out", str(tmp_path / "accepted"),
                     "--calibrate", str(trial), "--accept-calibration"]) == 0
    recorded = load_bundle(tmp_path / "accepted").manifest.provenance.model_dump()["session_calibration"]
    assert recorded["quality"]["warnings"] and "far below" in recorded["quality"]["warnings"][0]
