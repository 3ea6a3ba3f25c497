"""Windows of a real dataset on disk: through an encoder, as raw frames, through CEBRA."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.data.recording import list_trials, open_trial
from trainer.evaluation.baselines import (
    CebraSettings,
    _causal,
    cebra_windows,
    normalise_pose,
    raw_linear_aligned_windows,
    raw_linear_windows,
)
from trainer.evaluation.embed import block_pool, calibration_trials, encoder_windows, load_encoder, load_tables
from trainer.evaluation.windows import EvaluationError
from trainer.models import build_model

MODEL_ARGS = {"frame_shape": [32, 32], "window": 4, "pooled_size": 16, "channels": [4, 8], "features": 8,
              "temporal_channels": 8, "embedding_dim": 6}


@pytest.fixture(scope="module")
def encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("neural_conv", **MODEL_ARGS).eval()


def test_encoder_windows_equal_the_model_on_each_window(encoder, trainer_dataset: Path) -> None:  # type: ignore[no-untyped-def]
    ws = encoder_windows(encoder, trainer_dataset, batch=16, progress=False)
    paths = list_trials(trainer_dataset)
    calibration = set(calibration_trials(paths).values())
    # every animal's first trial calibrates it and is not scored
    assert calibration == set(paths[0::2])
    assert ws.features.shape == ((len(paths) - len(calibration)) * (64 - 4 + 1), 6)
    for path in calibration:
        with open_trial(path) as t:
            assert f"{t.animal_id}/{t.trial_id}" not in set(ws.trials.tolist())
    assert len(ws.animal_ids) == 3 and ws.window == 4
    with open_trial(paths[1]) as t:
        frames = torch.from_numpy(np.asarray(t.neural[:], dtype=np.float32))
        key = f"{t.animal_id}/{t.trial_id}"
        labels = t.neural_labels()
    rows = np.flatnonzero(ws.trials == key)
    with torch.inference_mode():
        expected = encoder(torch.stack([frames[i:i + 4] for i in range(61)])).numpy()
    np.testing.assert_allclose(ws.features[rows], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ws.labels[rows], labels[3:])  # label of each window's last frame


def test_encoders_are_read_with_the_online_centring_their_checkpoint_asks_for(trainer_dataset: Path) -> None:
    from trainer.adaptation import OnlineCentring
    from trainer.evaluation.embed import encoders_windows, online_centred

    torch.manual_seed(0)
    model = build_model("neural_conv", **MODEL_ARGS).eval()
    model.online_centring = OnlineCentring(2, 8)
    deployed = encoders_windows({"m": model}, trainer_dataset, batch=16, progress=False)["m"]
    calibration_only = encoders_windows({"m": model}, trainer_dataset, batch=16, progress=False,
                                        online_centring=False)["m"]
    np.testing.assert_allclose(deployed.features, online_centred(calibration_only, model.online_centring).features)
    assert not np.allclose(deployed.features, calibration_only.features)


def test_raw_windows_are_half_window_means_of_pooled_frames(trainer_dataset: Path) -> None:
    tables = load_tables(trainer_dataset, pooled_short_side=8, progress=False)
    ws = raw_linear_windows(tables, window=4)
    with open_trial(list_trials(trainer_dataset)[1]) as t:  # the first scored trial
        pooled = block_pool(np.asarray(t.neural[:]), 4).reshape(64, -1)
    assert ws.features.shape == (3 * 61, 2 * 64)
    first = ws.features[0]  # window of frames 0..3
    np.testing.assert_allclose(first[:64], pooled[0:2].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(first[64:], pooled[2:4].mean(axis=0), rtol=1e-5)


def test_aligned_raw_windows_are_calibrated_per_animal(trainer_dataset: Path) -> None:
    """Same windows as raw_linear; every pooled pixel centred on its animal's own log baseline
    (after alignment), measured on the animal's calibration trial only."""
    tables = load_tables(trainer_dataset, pooled_short_side=8, progress=False)
    ws = raw_linear_aligned_windows(tables, window=4)
    plain = raw_linear_windows(tables, window=4)
    assert ws.features.shape == plain.features.shape
    np.testing.assert_array_equal(ws.labels, plain.labels)
    np.testing.assert_array_equal(ws.animals, plain.animals)
    for animal in np.unique(ws.animals):
        mean = ws.features[ws.animals == animal].mean(axis=0)
        assert np.abs(mean).max() < 0.5, animal
    assert np.abs(plain.features.mean(axis=0)).max() > 10  # raw counts are far from centred
    # a scored trial informs no statistics: brightening one changes no other trial's features
    scored_trial = next(t for t in tables if not t.calibration)
    brighter = [replace(t, pooled=t.pooled * 4.0) if t is scored_trial else t for t in tables]
    changed = raw_linear_aligned_windows(brighter, window=4)
    mine = ws.trials == scored_trial.key
    np.testing.assert_allclose(changed.features[~mine], ws.features[~mine], rtol=1e-5, atol=1e-5)
    assert np.abs(changed.features[mine] - ws.features[mine]).mean() > 1.0


def test_every_animal_needs_a_calibration_trial_and_a_scored_one(tmp_path: Path, write_dataset) -> None:  # type: ignore[no-untyped-def]
    write_dataset(tmp_path, trials=1)
    with pytest.raises(EvaluationError, match="single trial"):
        load_tables(tmp_path, progress=False)


def test_pose_normalisation_removes_position_and_scale() -> None:
    rng = np.random.default_rng(0)
    pose = rng.normal(size=(50, 6, 3)).astype(np.float32)
    moved = 3.0 * pose + np.array([10.0, -4.0, 2.0], dtype=np.float32)
    np.testing.assert_allclose(normalise_pose(pose), normalise_pose(moved), atol=1e-5)


def test_cebra_embeddings_are_read_where_their_field_ends_at_the_window() -> None:
    per_frame = np.arange(8, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(_causal(per_frame, 4).ravel(), [0, 0, 0, 0, 0, 1, 2, 3])
    np.testing.assert_array_equal(_causal(per_frame, 0), per_frame)


@pytest.mark.slow  # importing cebra alone takes ~10 s (torch dynamo), more on a busy machine
def test_cebra_peer_gives_one_embedding_per_window(trainer_dataset: Path) -> None:
    tables = load_tables(trainer_dataset, pooled_short_side=8, progress=False)
    settings = CebraSettings(max_iterations=5, batch_size=32, output_dimension=4, num_hidden_units=8)
    ws, info = cebra_windows(tables, window=4, settings=settings, progress=False)
    assert ws.features.shape == (3 * 61, 4)
    assert np.isfinite(ws.features).all()
    assert info["settings"]["max_iterations"] == 5 and info["fit_s"] > 0
    assert info["causal_shift_frames"] == 4  # offset10-model: field c-5..c+4
    assert torch.get_num_threads() >= 1
    with pytest.raises(EvaluationError, match=">= 2 animals"):
        cebra_windows([t for t in tables if t.animal == tables[0].animal], window=4, settings=settings, progress=False)


def test_bad_checkpoints_and_mismatched_data_are_named(tmp_path: Path, encoder, trainer_dataset: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EvaluationError, match="does not exist"):
        load_encoder(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(EvaluationError, match="not a readable checkpoint"):
        load_encoder(junk)
    partial = tmp_path / "partial.pt"
    torch.save({"model_name": "neural_conv"}, partial)
    with pytest.raises(EvaluationError, match="lacks"):
        load_encoder(partial)
    other = build_model("neural_conv", **{**MODEL_ARGS, "frame_shape": [16, 16]}).eval()
    with pytest.raises(EvaluationError, match="encoder expects"):
        encoder_windows(other, trainer_dataset, progress=False)
