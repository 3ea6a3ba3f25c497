"""The training loop end to end on a small synthetic dataset: every method, checkpoint contract,
resume, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.config import METHODS, load_config
from trainer.models import build_model
from trainer.probe import LinearProbe
from trainer.train import TrainingError, train



@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_writes_a_contract_checkpoint(
    method: str, trainer_dataset: Path, tmp_path: Path, fast_overrides: list[str]
) -> None:
    cfg = load_config("tiny", [*fast_overrides, f"method={method}"])
    result = train(cfg, trainer_dataset, tmp_path)
    ckpt = torch.load(result.checkpoint, map_location="cpu", weights_only=True)  # as export loads it
    for key in ("model_name", "model_args", "state_dict", "head", "class_names", "window", "frame_shape",
                "frame_dtype", "frame_rate_hz", "preprocessing", "dataset_fingerprint", "metrics", "config"):
        assert key in ckpt, key
    model = build_model(ckpt["model_name"], **ckpt["model_args"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    assert ckpt["window"] == model.window == 4
    assert tuple(ckpt["frame_shape"]) == model.frame_shape == (32, 32)
    assert ckpt["frame_dtype"] == "uint16" and ckpt["frame_rate_hz"] == pytest.approx(16.0)
    c, d = len(ckpt["class_names"]), model.embedding_dim
    assert ckpt["head"]["weight"].shape == (c, d) and ckpt["head"]["bias"].shape == (c,)
    assert ckpt["metrics"]["method"] == method and np.isfinite(ckpt["metrics"]["final_loss"])
    assert ckpt["metrics"]["train_throughput_windows_per_s"] > 0
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "loss.png").stat().st_size > 1000
    # the rebuilt model is the trained one
    frames = torch.rand(2, 4, 32, 32) * 1000
    with torch.no_grad():
        torch.testing.assert_close(model(frames), result.encoder(frames))


def test_contrastive_training_learns_actions_beyond_the_untrained_encoder(
    tmp_path: Path, fast_overrides: list[str], write_dataset
) -> None:  # type: ignore[no-untyped-def]
    """The loss falls and the head fitted on the trained embedding beats the same head on the
    untrained encoder (same architecture, same seed). Without per-animal normalisation: centring
    each animal's embedding lifts the untrained encoder's head too (0.54 -> 0.57 training
    accuracy here; trained 0.59 either way), which is not what this test is about. Without
    cross-animal positives too: this fixture's animals share no matched anatomy, and pairing them
    lowers the head's training accuracy here (0.59 -> 0.55); the pairing has its own tests."""
    # four times the shared fixture's frames: on 366 windows the head's training accuracy moved by
    # several points with the seed alone
    data = tmp_path / "data"
    write_dataset(data, frames=256)
    # swap.history=1: these synthetic frames answer the current action instantly (no calcium
    # memory) and bouts last 4 frames, so neighbours matched on 8 frames of history are wrong here
    common = [*fast_overrides, "optim.steps_per_epoch=30", "optim.epochs=3", "optim.lr=3e-3", "swap.history=1", "model.animal_norm=none",
              "cross_animal.weight=0"]
    trained = train(load_config("tiny", common), data, tmp_path / "a")
    hist = trained.metrics["history"]
    assert hist[-1]["loss"] < hist[0]["loss"]
    untrained = train(load_config("tiny", [*common, "optim.lr=1e-9"]), data, tmp_path / "b")
    assert trained.metrics["head_train_accuracy"] > untrained.metrics["head_train_accuracy"] + 0.05


def test_resume_continues_to_the_same_result_as_one_run(
    trainer_dataset: Path, tmp_path: Path, fast_overrides: list[str]
) -> None:
    two = load_config("tiny", [*fast_overrides, "optim.epochs=2"])
    straight = train(two, trainer_dataset, tmp_path / "straight")
    train(two, trainer_dataset, tmp_path / "resumed", stop_after_epoch=1)  # interrupted
    resumed = train(two, trainer_dataset, tmp_path / "resumed", resume=True)
    a = torch.load(straight.checkpoint, weights_only=True)["state_dict"]
    b = torch.load(resumed.checkpoint, weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    assert [h["epoch"] for h in resumed.metrics["history"]] == [1, 2]


def test_resume_refuses_a_missing_or_mismatched_state(
    trainer_dataset: Path, tmp_path: Path, fast_overrides: list[str]
) -> None:
    cfg = load_config("tiny", fast_overrides)
    with pytest.raises(TrainingError, match="state.pt does not exist"):
        train(cfg, trainer_dataset, tmp_path, resume=True)
    train(cfg, trainer_dataset, tmp_path)
    other = load_config("tiny", [*fast_overrides, "method=simclr"])
    with pytest.raises(TrainingError, match="'method' differs"):
        train(other, trainer_dataset, tmp_path, resume=True)
    (tmp_path / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="not a readable training state"):
        train(cfg, trainer_dataset, tmp_path, resume=True)


def test_bad_datasets_are_refused_before_training(tmp_path: Path, fast_overrides: list[str], write_dataset) -> None:  # type: ignore[no-untyped-def]
    unlabelled = tmp_path / "unlabelled"
    write_dataset(unlabelled, animals=2, trials=1, labelled=False)
    with pytest.raises(TrainingError, match="no labelled windows"):
        train(load_config("tiny", fast_overrides), unlabelled, tmp_path / "o1")
    one_animal = tmp_path / "one"
    write_dataset(one_animal, animals=1, trials=1)
    with pytest.raises(TrainingError, match="at least 2 training animals"):
        train(load_config("tiny", [*fast_overrides, "method=ours"]), one_animal, tmp_path / "o2")
    with pytest.raises(ValueError, match="not in the dataset"):
        train(load_config("tiny", [*fast_overrides, "data.exclude_animals=['nobody']"]), one_animal, tmp_path / "o3")
    assert not (tmp_path / "o1" / "checkpoint.pt").exists()


def test_held_out_animals_are_not_trained_on(trainer_dataset: Path, tmp_path: Path, fast_overrides: list[str]) -> None:
    result = train(load_config("tiny", [*fast_overrides, "data.exclude_animals=['animal2']"]), trainer_dataset, tmp_path)
    assert result.metrics["training_animals"] == ["animal0", "animal1"]


def test_linear_probe_head_reproduces_its_predictions() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)) * np.array([1, 10, 0.1, 1, 1]) + 3.0
    y = (x[:, 0] > 3).astype(int) + 2 * (x[:, 1] > 30)
    y[:10] = -1  # unlabelled rows are ignored
    probe = LinearProbe().fit(x, y, n_classes=5)
    head = probe.head()
    assert head["weight"].shape == (5, 5) and head["bias"].shape == (5,)
    logits = x.astype(np.float32) @ head["weight"].T + head["bias"]
    np.testing.assert_array_equal(logits.argmax(1), probe.predict(x))
    assert probe.accuracy(x, y) > 0.9
    assert probe.predict_proba(x)[:, 4].max() < 1e-6  # class 4 never seen
    with pytest.raises(ValueError, match="no labelled rows"):
        LinearProbe().fit(x, np.full(300, -1), n_classes=5)
    with pytest.raises(ValueError, match="out of range"):
        LinearProbe().fit(x, np.full(300, 7), n_classes=5)


def test_frame_table_aligns_pose_and_reuses_its_pooled_cache(trainer_dataset: Path, tmp_path: Path) -> None:
    from trainer.data.recording import list_trials, open_trial
    from trainer.frametable import build_frame_table

    paths = list_trials(trainer_dataset)
    enc = build_model("neural_conv", frame_shape=(32, 32), window=4, pooled_size=16, channels=[4, 8])
    first = build_frame_table(paths, enc.frame_encoder, 4, cache_dir=tmp_path, progress=False)
    cache = list(tmp_path.glob("pooled-*-x2.npy"))
    assert len(cache) == 1 and not list(tmp_path.glob(".*tmp"))
    again = build_frame_table(paths, enc.frame_encoder, 4, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(np.asarray(first.pooled), np.asarray(again.pooled))
    assert first.pose_steps == 6  # 96 Hz pose / 16 Hz imaging
    with open_trial(paths[0]) as t:
        raw = torch.from_numpy(np.asarray(t.neural[:5], dtype=np.float32))
        labels = t.neural_labels()
    np.testing.assert_allclose(first.pooled[:5], enc.frame_encoder.preprocess(raw).squeeze(1).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(first.labels[: len(labels)], labels)
    # windows never cross a trial boundary
    frames = first.starts[:, None] + np.arange(4)
    assert (first.trial[frames] == first.trial[frames[:, :1]]).all()


def test_cross_animal_positives_pair_each_window_with_another_animals_stretch(
    trainer_dataset: Path, tmp_path: Path, fast_overrides: list[str]
) -> None:
    """With cross_animal.weight > 0 every window gets a contiguous window of another animal (the
    pose-history match of its middle frame) and training runs with the extra term."""
    from trainer.frametable import build_frame_table, calibrate_table
    from trainer.train import BatchMaker, build_encoder, build_swap_index

    cfg = load_config("tiny", [*fast_overrides, "method=contrastive_noswap", "cross_animal.weight=1.0", "swap.history=1"])
    encoder = build_encoder(cfg, (32, 32))
    from trainer.data.recording import list_trials

    table = build_frame_table(list_trials(trainer_dataset), encoder.frame_encoder, encoder.window, progress=False)
    calibrate_table(table, progress=False)
    index = build_swap_index(cfg, table)
    make = BatchMaker(cfg, table, encoder, None, index)
    starts = torch.from_numpy(table.starts[:16])
    neural, pose, baseline, animals, matched = make(starts, torch.Generator().manual_seed(0))
    m_neural, m_baseline, m_animals = matched
    assert m_neural.shape == neural.shape and m_baseline.shape == baseline.shape
    own = torch.from_numpy(table.animal[table.starts[:16]])
    assert (m_animals[:, 0] != own).all()  # always another animal
    assert (m_animals == m_animals[:, :1]).all()  # one animal per matched window
    result = train(cfg, trainer_dataset, tmp_path)
    assert np.isfinite(result.metrics["final_loss"]) and result.metrics["cross_animal_positives"] is True
    ckpt = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    projection = build_model(ckpt["projection"]["model_name"], **ckpt["projection"]["model_args"])
    projection.load_state_dict(ckpt["projection"]["state_dict"])  # the loss's head travels for evaluation
    # one training animal: nothing to pair, so the (default-on) term is off rather than an error
    one = train(load_config("tiny", [*fast_overrides, "method=contrastive_noswap", "cross_animal.weight=1.0",
                                     'data.animals=["animal0"]']), trainer_dataset, tmp_path / "one")
    assert one.metrics["cross_animal_positives"] is False and np.isfinite(one.metrics["final_loss"])


def test_checkpoint_carries_every_training_animals_normalisation_statistics(
    trainer_dataset: Path, tmp_path: Path, fast_overrides: list[str]
) -> None:
    from trainer.calibration import CalibrationSet

    result = train(load_config("tiny", [*fast_overrides, "model.animal_norm=both"]), trainer_dataset, tmp_path)
    ckpt = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    stored = CalibrationSet.from_checkpoint(ckpt)
    assert sorted(stored.animals) == ["animal0", "animal1", "animal2"]
    for cal in stored.animals.values():
        assert cal.feature_mean.shape == (8,) and cal.embedding_mean.shape == (8,)
        assert (cal.feature_std > 0).all()
    # decoding a training animal with its stored calibration gives embeddings centred on it
    model = build_model(ckpt["model_name"], **ckpt["model_args"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval().set_calibration(stored.animals["animal1"])
    assert ckpt["model_args"]["animal_norm"] == "both"
