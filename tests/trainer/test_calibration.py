"""Field-of-view alignment and session calibration: known transforms are recovered, templates are
centred, calibrations round-trip and go into the encoder's graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.alignment import IDENTITY, Alignment, build_template, estimate_alignment, registration_image, warp
from trainer.calibration import CalibrationSet, SessionCalibration, calibrate, calibrate_group
from trainer.models import build_model

SHAPE = (48, 48)


def _field(rng: np.random.Generator, n_cells: int = 40) -> np.ndarray:
    """A template field: cells (y, x, brightness) inside an elongated lobe, normalised units."""
    return np.column_stack([rng.uniform(-0.6, 0.6, (n_cells, 2)), rng.uniform(200, 600, n_cells)])


def _render(cells: np.ndarray, alignment: Alignment) -> np.ndarray:
    """The field as an animal whose view is `alignment` (template -> animal coordinates) sees it:
    every pixel is mapped back to template coordinates and the field evaluated there, so the
    view is filled everywhere, as a microscope's is. Returns (1 + cells, H, W): the lobe, then
    each cell's footprint."""
    yy, xx = np.mgrid[-1 : 1 : SHAPE[0] * 1j, -1 : 1 : SHAPE[1] * 1j]
    back = alignment.inverse().theta()
    tx = back[0, 0] * xx + back[0, 1] * yy + back[0, 2]
    ty = back[1, 0] * xx + back[1, 1] * yy + back[1, 2]
    lobe = 200.0 / (1.0 + np.exp((np.sqrt((tx / 0.7) ** 2 + (ty / 0.5) ** 2) - 1.0) / 0.08))
    footprints = [amp * np.exp(-((ty - cy) ** 2 + (tx - cx) ** 2) / (2 * 0.05**2)) for cy, cx, amp in cells]
    return np.stack([lobe, *footprints]).astype(np.float32)


def _recording(cells: np.ndarray, alignment: Alignment, rng: np.random.Generator, n: int = 256) -> np.ndarray:
    """Frames of an animal seeing the field through `alignment`: every cell's activity fluctuates
    on its own; gain, offset and shot noise are the animal's own."""
    parts = _render(cells, alignment)
    activity = np.concatenate([np.ones((n, 1)), rng.lognormal(0.0, 0.5, (n, len(cells)))], axis=1)
    gain, offset = rng.uniform(0.5, 2.0), rng.uniform(50, 300)
    signal = np.einsum("nc,chw->nhw", activity, parts)
    return rng.poisson(offset + gain * signal).astype(np.float32)


def test_then_and_inverse_compose_similarity_transforms() -> None:
    a = Alignment(7.0, 1.1, 0.05, -0.08)
    back = a.then(a.inverse())
    np.testing.assert_allclose(back.theta(), IDENTITY.theta(), atol=1e-6)
    b = Alignment(-3.0, 0.9, -0.02, 0.04)
    point = np.array([0.3, -0.2])
    apply = lambda t, p: t.theta()[:, :2] @ p + t.theta()[:, 2]  # noqa: E731
    np.testing.assert_allclose(apply(a.then(b), point), apply(a, apply(b, point)), atol=1e-6)


@pytest.mark.parametrize("truth", [Alignment(8.0, 1.1, 0.1, -0.05), Alignment(-11.0, 0.88, -0.08, 0.1), IDENTITY])
def test_estimate_alignment_recovers_a_known_similarity_transform(truth: Alignment) -> None:
    rng = np.random.default_rng(0)
    field = _field(rng)
    template = registration_image(_recording(field, IDENTITY, rng))
    moving = registration_image(_recording(field, truth, rng))
    found = estimate_alignment(moving, template)
    assert found.rotation_deg == pytest.approx(truth.rotation_deg, abs=1.0)
    assert found.scale == pytest.approx(truth.scale, abs=0.03)
    assert found.shift_x == pytest.approx(truth.shift_x, abs=0.03)
    assert found.shift_y == pytest.approx(truth.shift_y, abs=0.03)
    assert found.score > 0.3


def test_group_template_recovers_relative_transforms_and_is_centred() -> None:
    rng = np.random.default_rng(1)
    field = _field(rng)
    truths = [Alignment(6.0, 1.05, 0.05, 0.0), Alignment(-5.0, 0.95, -0.04, 0.06),
              Alignment(2.0, 1.0, 0.0, -0.07), Alignment(-3.0, 1.02, 0.02, 0.02)]
    images = [registration_image(_recording(field, t, rng)) for t in truths]
    template, found = build_template(images)
    assert template.shape == images[0].shape
    # relative transforms between animals are what the data determines
    for i in range(1, len(truths)):
        expected = truths[i].then(truths[0].inverse())
        got = found[i].then(found[0].inverse())
        assert got.rotation_deg == pytest.approx(expected.rotation_deg, abs=1.5)
        assert got.scale == pytest.approx(expected.scale, abs=0.04)
    # the template sits at the group's average placement, not at one animal's
    assert abs(np.mean([a.rotation_deg for a in found])) < 1.0
    assert abs(np.mean([np.log(a.scale) for a in found])) < 0.03


def test_calibration_centres_every_pixel_and_round_trips() -> None:
    rng = np.random.default_rng(2)
    field = _field(rng)
    frames = {f"a{i}": _recording(field, t, rng) for i, t in
              enumerate([IDENTITY, Alignment(5.0, 1.05, 0.04, -0.03), Alignment(-4.0, 0.95, -0.05, 0.02)])}
    template, cals = calibrate_group(frames)
    for name, cal in cals.items():
        aligned = warp(torch.from_numpy(frames[name]), cal.alignment).numpy()
        centred = np.log1p(aligned) - cal.log_mean
        np.testing.assert_allclose(centred.mean(axis=0), 0.0, atol=1e-4)  # every pixel on its own session mean
    again = SessionCalibration.from_dict(cals["a1"].to_dict())
    np.testing.assert_allclose(again.log_mean, cals["a1"].log_mean, atol=1e-6)
    assert again.alignment.rotation_deg == pytest.approx(cals["a1"].alignment.rotation_deg, abs=1e-5)
    # an animal outside the set is calibrated from its own frames against the template
    stored = CalibrationSet(template, cals)
    new = stored.for_animal("new", _recording(field, Alignment(3.0, 1.0, 0.02, 0.0), rng))
    assert new.alignment.rotation_deg - cals["a0"].alignment.rotation_deg == pytest.approx(3.0, abs=1.5)
    with pytest.raises(ValueError, match="not in training"):
        stored.for_animal("new")


def test_calibrate_refuses_too_few_frames() -> None:
    with pytest.raises(ValueError, match="at least 2 frames"):
        calibrate(np.ones((1, 8, 8), np.float32), np.zeros((2, 8, 8), np.float32))


def test_session_encoder_applies_its_installed_calibration_to_raw_frames() -> None:
    """forward(raw) = pooled -> align -> log1p minus baseline -> CNN equals encoding the aligned
    pooled frames with the calibration's baseline passed explicitly (the training path), and a
    global gain change (laser power) changes nothing."""
    rng = np.random.default_rng(3)
    model = build_model("neural_conv", frame_shape=[32, 32], window=2, downsample=2, normalise="session",
                        channels=[4, 8], features=8, temporal_channels=8, embedding_dim=6).eval()
    cal = SessionCalibration(Alignment(6.0, 1.05, 0.03, -0.02), rng.normal(5, 0.1, (16, 16)).astype(np.float32),
                             frames=100)
    model.frame_encoder.session.set_calibration(cal)
    raw = torch.from_numpy(rng.uniform(50, 500, (2, 2, 32, 32)).astype(np.float32))
    pooled = model.frame_encoder.preprocess(raw.flatten(0, 1)).squeeze(1)
    aligned = warp(pooled, cal.alignment).unflatten(0, (2, 2))
    baseline = torch.from_numpy(cal.log_mean).expand(2, 2, -1, -1)
    with torch.no_grad():
        torch.testing.assert_close(model(raw), model.forward_pooled(aligned, baseline), rtol=0, atol=1e-5)
        brighter = model(raw * 1.4 + 0.4)  # log1p(1.4 x + 0.4) = log(1.4) + log1p(x): a pure offset
        torch.testing.assert_close(brighter, model(raw), rtol=0, atol=1e-4)
    assert model.preprocessing()["session_calibration"]["rotation_deg"] == pytest.approx(6.0)
    with pytest.raises(ValueError, match="pools to"):
        model.frame_encoder.session.set_calibration(
            SessionCalibration(IDENTITY, np.zeros((8, 8), np.float32), 2))
