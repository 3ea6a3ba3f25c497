"""Simulator: determinism, valid recordings, behaviour/pose/neural properties, the CLI and figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tools.cli import main
from tools.simulator import get_preset, make_animals, simulate_dataset, simulate_trial
from tools.simulator.behaviour import MAX_BOUT_S, MIN_BOUT_S, BehaviourParams, bouts, simulate_actions
from tools.simulator.pose import PoseParams, kinematic_features, simulate_pose
from tools.simulator.presets import SimulationConfig
from trainer.data.recording import list_trials, open_trial
from trainer.data.schema import ACTION_NAMES, LEGS, leg_joint_indices

SMALL = SimulationConfig(name="small", n_animals=2, trials_per_animal=1, trial_seconds=5.0, frame_shape=(24, 32),
                         n_template_neurons=16)


def test_deterministic_for_a_seed() -> None:
    _, animals = make_animals(SMALL, seed=3)
    a = simulate_trial(SMALL, animals[1], 0, seed=3)
    b = simulate_trial(SMALL, make_animals(SMALL, seed=3)[1][1], 0, seed=3)
    c = simulate_trial(SMALL, make_animals(SMALL, seed=4)[1][1], 0, seed=4)
    for field in ("neural", "neural_times", "pose", "labels"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.neural, c.neural)


def test_dataset_is_valid_and_described(tmp_path: Path) -> None:
    paths = simulate_dataset(SMALL, seed=0, out_dir=tmp_path, progress=False)
    assert paths == list_trials(tmp_path)
    manifest = json.loads((tmp_path / "dataset.json").read_text())
    assert manifest["seed"] == 0 and manifest["config"]["frame_shape"] == [24, 32]
    assert [a["animal_id"] for a in manifest["animals"]] == ["animal00", "animal01"]
    for p in paths:
        with open_trial(p) as t:
            assert t.frame_shape == (24, 32) and t.frame_dtype == np.uint16
            assert t.n_neural == pytest.approx(5.0 * 16, abs=2)
            assert len(t.pose_times) == 500 and t.pose.shape == (500, 38, 3)
            assert t.class_names == list(ACTION_NAMES)
            assert (t.neural_rate_hz, t.pose_rate_hz) == (16.0, 100.0)
            # Separate clocks: the scanner starts after the cameras, not on a pose frame.
            assert 0 < t.neural_times[0] < 1 / 16
            frames = np.asarray(t.neural[()])
            assert 0 < frames.min() and frames.max() < 65535  # no clipping
            assert t.attrs["source"] == "simulator"


def test_tiny_preset_end_to_end(tmp_path: Path) -> None:
    config = get_preset("tiny")
    assert (config.n_animals, config.trials_per_animal, config.frame_shape) == (4, 2, (64, 64))
    paths = simulate_dataset(config, seed=0, out_dir=tmp_path, progress=False)
    assert len(paths) == 8
    with open_trial(paths[-1]) as t:
        assert t.animal_id == "animal03" and t.n_neural >= 19 * 16


def test_bench_preset_shape() -> None:
    config = get_preset("bench")
    assert config.n_animals >= 8 and config.trials_per_animal >= 3 and config.trial_seconds >= 60
    assert config.frame_shape == (256, 256)


def test_behaviour_bouts_and_coverage() -> None:
    rng = np.random.default_rng(0)
    labels = simulate_actions(100 * 600, 100.0, BehaviourParams.sample(rng), rng)
    runs = bouts(labels)
    durations = np.array([(b - a) / 100.0 for _, a, b in runs[:-1]])  # the last bout is cut by the trial end
    # Consecutive bouts of the same action merge into one run, so only the minimum is strict.
    assert durations.min() >= MIN_BOUT_S - 0.01
    assert np.median(durations) < MAX_BOUT_S
    counts = np.bincount(labels, minlength=len(ACTION_NAMES)) / len(labels)
    assert (counts > 0.01).all(), counts  # every action occurs


def test_pose_is_a_rigid_skeleton_moving_per_action() -> None:
    rng = np.random.default_rng(1)
    params = PoseParams.sample(rng)
    labels = np.repeat(np.arange(len(ACTION_NAMES)), 200)
    pose = simulate_pose(labels, 100.0, params, rng)
    for leg_i, leg in enumerate(LEGS):
        idx = leg_joint_indices(leg)
        seg = np.linalg.norm(np.diff(pose[:, idx], axis=1), axis=2)  # T x 4
        np.testing.assert_allclose(seg, np.broadcast_to(params.segment_mm[leg_i], seg.shape), rtol=1e-6)
    kin = kinematic_features(pose, 100.0)
    by_action = np.array([kin[labels == a][50:].mean(axis=0) for a in range(len(ACTION_NAMES))])
    front_speed, hind_speed, front_height = by_action[:, 0], by_action[:, 2], by_action[:, 3]
    assert front_speed[0] > front_speed[2] + 1.0  # walking moves the front legs, resting does not
    assert hind_speed[4] > hind_speed[3]  # hind-leg grooming moves the hind legs more than foreleg grooming
    assert front_height[5] > front_height[2] + 1.0  # antennal grooming lifts the front legs


def test_animals_differ_but_share_neurons() -> None:
    template, animals = make_animals(get_preset("bench"), seed=0)
    rotations = {round(a.neural.rotation_rad, 6) for a in animals}
    assert len(rotations) == len(animals)
    for a in animals:
        shared = a.neural.template_index[a.neural.template_index >= 0]
        assert 0.7 * len(template) <= len(shared) < len(template)  # some missing, most shared
        assert (a.neural.template_index == -1).sum() >= 1  # extra neurons of its own
        np.testing.assert_array_equal(a.neural.neurons.action_weights[: len(shared)], template.action_weights[shared])
        assert 0.05 <= a.neural.rise_s <= 0.1 and 0.5 <= a.neural.decay_s <= 1.5


def test_cli_writes_dataset_and_figure(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    argv = ["simulate", "--preset", "tiny", "--seed", "1", "--animals", "2", "--trials", "1", "--seconds", "4",
            "--frame-shape", "32", "40", "--out", str(out)]
    assert main(argv) == 0
    assert len(list_trials(out)) == 2
    png = out / "overview.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert main(argv) == 2  # refuses to overwrite trials without --force
    (out / "mine.h5").write_bytes(b"someone else's file")
    argv[argv.index("--animals") + 1] = "1"  # a smaller run must not leave animal01 behind
    assert main([*argv, "--force", "--no-figure"]) == 0
    assert [p.name for p in list_trials(out)] == ["animal00_trial00.h5", "mine.h5"]


def test_cli_rejects_bad_settings(tmp_path: Path) -> None:
    assert main(["simulate", "--seconds", "0.5", "--out", str(tmp_path / "x")]) == 2
    assert main(["simulate", "--frame-shape", "4", "4", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_shift_frames_matches_scipy() -> None:
    from scipy.ndimage import shift

    from tools.simulator.neural import shift_frames

    rng = np.random.default_rng(0)
    frames = rng.random((6, 30, 40)).astype(np.float32)
    shifts = rng.normal(0, 2.0, (6, 2))
    got = shift_frames(frames, shifts)
    want = np.stack([shift(f, s, order=1, mode="nearest", prefilter=False) for f, s in zip(frames, shifts)])
    inner = (slice(None), slice(8, -8), slice(8, -8))  # edge handling differs only within the shift
    np.testing.assert_allclose(got[inner], want[inner], atol=1e-5)



def test_ou_noise_is_stationary_from_the_first_sample() -> None:
    from tools.simulator.neural import ou_noise

    x = ou_noise(400, 100.0, 0.5, np.random.default_rng(0), width=2000)
    assert np.std(x[0]) == pytest.approx(1.0, abs=0.06)  # no start-up burst
    assert np.std(x[-1]) == pytest.approx(1.0, abs=0.06)
    lag = int(0.5 * 100)
    corr = np.mean(x[100] * x[100 + lag])
    assert corr == pytest.approx(np.exp(-1.0), abs=0.06)  # correlation time 0.5 s
