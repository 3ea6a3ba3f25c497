"""Contract tests of the trainer's models (docs/contracts.md, "Neural encoder")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.models import MODELS, NeuralEncoder, build_model

SMALL = {"frame_shape": (64, 96), "window": 4, "pooled_size": 16, "channels": [8, 16],
         "features": 16, "temporal_channels": 16, "embedding_dim": 12}


def _raw_frames(*shape: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(100, 4000, size=shape).astype(np.uint16).astype(np.float32))


def test_registry_lists_every_model_and_rejects_unknown_names() -> None:
    assert {"neural_conv", "pose_conv", "projection", "pose_regression"} <= set(MODELS)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope")
    with pytest.raises(ValueError, match="neural_conv"):
        build_model("neural_conv", frame_shape=(64, 64), bogus=1)


def test_default_encoder_declares_window_of_8_and_frame_shape() -> None:
    model = build_model("neural_conv", frame_shape=(256, 256))
    assert isinstance(model, NeuralEncoder)
    assert model.window == 8
    assert model.frame_shape == (256, 256)
    assert model.pooled_shape == (32, 32)  # 8 x 8 average pool
    assert model.preprocessing()["downsample"]["factor"] == 8


def test_forward_is_temporal_of_frame_encoder() -> None:
    model = build_model("neural_conv", **SMALL).eval()
    frames = _raw_frames(3, 4, 64, 96)
    with torch.no_grad():
        whole = model(frames)
        per_frame = torch.stack([model.frame_encoder(frames[:, t]) for t in range(4)], dim=1)
        streamed = model.temporal(per_frame)
    assert whole.shape == (3, 12)
    assert per_frame.shape == (3, 4, 16)
    torch.testing.assert_close(whole, streamed, rtol=0, atol=1e-5)


def test_forward_pooled_matches_forward_on_raw_frames() -> None:
    model = build_model("neural_conv", **SMALL).eval()
    frames = _raw_frames(2, 4, 64, 96, seed=1)
    with torch.no_grad():
        pooled = model.frame_encoder.preprocess(frames.flatten(0, 1)).squeeze(1).unflatten(0, (2, 4))
        torch.testing.assert_close(model.forward_pooled(pooled), model(frames), rtol=0, atol=1e-5)


def test_rebuild_from_model_args_gives_identical_outputs() -> None:
    torch.manual_seed(0)
    model = build_model("neural_conv", **SMALL).eval()
    clone = build_model("neural_conv", **model.model_args).eval()
    clone.load_state_dict(model.state_dict())
    frames = _raw_frames(2, 4, 64, 96, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(clone(frames), model(frames), rtol=0, atol=0)


def test_frame_normalisation_removes_a_global_gain() -> None:
    """x -> g*x (laser power, expression level) barely changes the features: log turns the gain
    into an offset and per-frame standardisation removes it (exact up to the +1 of log1p)."""
    model = build_model("neural_conv", **SMALL).eval()
    frames = _raw_frames(2, 64, 96, seed=3) + 2000.0
    with torch.no_grad():
        a = model.frame_encoder(frames)
        b = model.frame_encoder(frames * 3.0)
    assert torch.allclose(a, b, atol=1e-3 * a.abs().max().item())


def test_frame_too_small_for_the_cnn_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="too small"):
        build_model("neural_conv", frame_shape=(8, 8), channels=[8, 8, 8, 8])
    with pytest.raises(ValueError, match="frame_shape"):
        build_model("neural_conv", frame_shape=(0, 8))


def test_pose_encoder_and_heads_shapes() -> None:
    pose = build_model("pose_conv", joints=5, embedding_dim=12)
    proj = build_model("projection", embedding_dim=12, hidden=16, out_dim=8)
    reg = build_model("pose_regression", embedding_dim=12, steps=10, joints=5)
    emb = pose(torch.randn(3, 10, 5, 3))
    assert emb.shape == (3, 12)
    z = proj(emb)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))
    assert reg(emb).shape == (3, 10, 5, 3)
    with pytest.raises(ValueError, match="poses must be"):
        pose(torch.randn(3, 10, 4, 3))


def test_parts_export_with_static_shapes() -> None:
    """Both parts go through torch.export (the front end of the ONNX exporter) without
    graph breaks or data-dependent branches."""
    model = build_model("neural_conv", **SMALL).eval()
    frame = _raw_frames(1, 64, 96)
    ep = torch.export.export(model.frame_encoder, (frame,))
    torch.testing.assert_close(ep.module()(frame), model.frame_encoder(frame))
    feats = torch.randn(1, 4, 16)
    ep_t = torch.export.export(model.temporal, (feats,))
    torch.testing.assert_close(ep_t.module()(feats), model.temporal(feats))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # third-party exporter noise
def test_parts_run_in_onnxruntime_like_in_torch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ort = pytest.importorskip("onnxruntime")
    model = build_model("neural_conv", frame_shape=(128, 256)).eval()
    frame = _raw_frames(1, 128, 256)
    torch.onnx.export(model.frame_encoder, (frame,), tmp_path / "f.onnx", dynamo=True,
                      input_names=["frame"], output_names=["features"])
    sess = ort.InferenceSession(str(tmp_path / "f.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"frame": frame.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, model.frame_encoder(frame).numpy(), atol=1e-4)
