"""Per-animal normalisation: batch statistics in training, the calibration's when serving, and the
statistics a calibration measures make a new animal's features standard and its embedding centred."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.alignment import IDENTITY, Alignment, edge_of_search
from trainer.calibration import (
    CalibrationSet,
    SessionCalibration,
    calibrate_encoder,
    calibration_quality,
    with_encoder_statistics,
)
from trainer.models import build_model
from trainer.models.neural import AnimalNorm, batch_statistics

ARGS = {"frame_shape": [32, 32], "window": 3, "downsample": 2, "normalise": "session", "channels": [4, 8],
        "features": 8, "temporal_channels": 8, "embedding_dim": 6}


def test_batch_statistics_standardise_each_animal_on_its_own() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=gen)
    animals = torch.tensor([0] * 20 + [2] * 40)
    x[animals == 2] = x[animals == 2] * 7.0 + 30.0  # another animal: other offset and scale
    out = AnimalNorm(5, eps=1e-6)(x, animals)
    for a in (0, 2):
        part = out[animals == a]
        torch.testing.assert_close(part.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
        torch.testing.assert_close(part.std(0, unbiased=False), torch.ones(5), atol=1e-3, rtol=0)
    mean, std = batch_statistics(x, animals, 1e-6)
    torch.testing.assert_close(mean[0], x[:20].mean(0))
    # gradients flow through the statistics (the encoder cannot hide identity in an offset)
    y = x.clone().requires_grad_()
    AnimalNorm(5)(y, animals).sum().backward()
    assert y.grad is not None and float(y.grad.abs().max()) < 1e-4  # a sum of standardised values is constant


def test_installed_statistics_are_used_without_animals_and_refused_when_bad() -> None:
    norm = AnimalNorm(3)
    norm.set_statistics(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 4.0]))
    torch.testing.assert_close(norm(torch.tensor([[3.0, 2.0, 7.0]])), torch.tensor([[1.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match="features"):
        norm.set_statistics(np.zeros(4), np.ones(4))
    with pytest.raises(ValueError, match="positive std"):
        norm.set_statistics(np.zeros(3), np.zeros(3))
    assert "mean" not in norm.state_dict()  # describes the animal decoded, not the model


@pytest.mark.parametrize("where", ["features", "embedding", "both"])
def test_calibration_measures_what_standardises_the_animal(where: str) -> None:
    """Measured on an animal's frames, the statistics make its features (and embedding) zero-mean
    and unit-std over those frames once installed: the serving path equals training's batch
    statistics over the same frames."""
    torch.manual_seed(0)
    model = build_model("neural_conv", **ARGS, animal_norm=where).eval()
    rng = np.random.default_rng(1)
    pooled = rng.uniform(100, 900, (40, 16, 16)).astype(np.float32)
    cal = SessionCalibration(IDENTITY, np.log1p(pooled).mean(0).astype(np.float32), 40)
    with pytest.raises(ValueError, match="statistics"):
        model.set_calibration(cal)  # the encoder needs its statistics
    cal = with_encoder_statistics(cal, model, pooled, aligned=True)
    assert cal.summary()["normalisation_statistics"]
    model.set_calibration(cal)
    again = SessionCalibration.from_dict(cal.to_dict())
    if where in ("features", "both"):
        np.testing.assert_allclose(again.feature_std, cal.feature_std)
    frames = torch.from_numpy(pooled).unsqueeze(1)
    with torch.no_grad():
        feats = model.frame_encoder.encode_pooled(frames)
        windows = feats.unfold(0, 3, 1).permute(0, 2, 1)
        emb = model.temporal(windows.contiguous())
        if where in ("features", "both"):
            torch.testing.assert_close(feats.mean(0), torch.zeros(8), atol=1e-4, rtol=0)
        if where in ("embedding", "both"):
            torch.testing.assert_close(emb.mean(0), torch.zeros(6), atol=1e-4, rtol=0)
            # the embedding is centred, not scaled
            raw_emb = model.temporal.raw_embedding(windows.contiguous())
            torch.testing.assert_close(emb, raw_emb - raw_emb.mean(0), atol=1e-5, rtol=0)
        # whole-window forward on raw frames equals the streaming split with the same calibration
        raw = torch.from_numpy(np.repeat(np.repeat(pooled[:3], 2, axis=1), 2, axis=2))
        torch.testing.assert_close(model(raw[None]), emb[:1], atol=1e-4, rtol=0)


def test_animal_norm_needs_session_normalisation() -> None:
    with pytest.raises(ValueError, match="session"):
        build_model("neural_conv", **{**ARGS, "normalise": "frame"}, animal_norm="features")
    with pytest.raises(ValueError, match="animal_norm"):
        build_model("neural_conv", **ARGS, animal_norm="everywhere")


def test_fits_at_the_edge_of_the_search_or_far_below_training_are_flagged() -> None:
    assert edge_of_search(Alignment(3.0, 1.02, 0.05, -0.1)) == []
    assert "rotation" in edge_of_search(Alignment(29.5, 1.0))[0]
    assert "scale" in edge_of_search(Alignment(0.0, 0.80))[0]
    assert "shift" in edge_of_search(Alignment(0.0, 1.0, 0.48, 0.0))[0]
    log_mean = np.zeros((4, 4), np.float32)
    stored = CalibrationSet(np.zeros((2, 4, 4), np.float32), {
        "a": SessionCalibration(Alignment(score=0.85), log_mean, 10),
        "b": SessionCalibration(Alignment(score=0.78), log_mean, 10)})
    good = calibration_quality(SessionCalibration(Alignment(2.0, score=0.66), log_mean, 10), stored)
    assert good["warnings"] == [] and good["training_scores"] == [0.78, 0.85]
    poor = calibration_quality(SessionCalibration(Alignment(17.0, score=0.59), log_mean, 10), stored)
    assert len(poor["warnings"]) == 1 and "far below" in poor["warnings"][0]


def test_calibrate_encoder_refuses_a_recording_shorter_than_the_window() -> None:
    model = build_model("neural_conv", **ARGS, animal_norm="both").eval()
    rng = np.random.default_rng(0)
    pooled = rng.uniform(100, 900, (2, 16, 16)).astype(np.float32)
    template = np.zeros((2, 16, 16), np.float32)
    with pytest.raises(ValueError, match="consecutive frames"):
        calibrate_encoder(model, pooled, template)
