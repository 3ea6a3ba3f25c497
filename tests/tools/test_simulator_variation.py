"""Simulator presets whose animals differ after rigid alignment (tools/simulator/variation.py), and
the original presets left as they were."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tools.cli import main
from tools.simulator import get_preset, make_animals, simulate_dataset, simulate_trial
from tools.simulator.differences import (
    images,
    log_gain_sd,
    pooled,
    template_positions_residual,
    template_tuning_correlation,
    true_alignment,
    tuning_correlation,
    visible_overlap,
)
from tools.simulator.presets import SimulationConfig
from tools.simulator.variation import AnimalVariation, Deformation, field_grid, mix_tuning, similarity_residual
from trainer.data.recording import list_trials


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _trial_digest(config: SimulationConfig, seed: int, animal: int, trial: int) -> str:
    t = simulate_trial(config, make_animals(config, seed)[1][animal], trial, seed)
    return _digest(t.neural, t.neural_times, t.pose, t.pose_times, t.labels, t.dff)


# The fields an animal's neural parameters had before the varied presets (`deformation` is new).
_ORIGINAL_FIELDS = ("template_index", "rotation_rad", "scale", "translation", "brightness", "background_photons",
                    "background_seed", "gain", "dark_offset", "read_noise", "rise_s", "decay_s", "bleach_tau_s",
                    "drift_fraction", "motion_px", "jump_rate_hz")


def _animals_digest(config: SimulationConfig, seed: int) -> str:
    template, animals = make_animals(config, seed)
    arrays = [getattr(template, k) for k in template.__dataclass_fields__]
    for a in animals:
        arrays += [getattr(a.neural.neurons, k) for k in a.neural.neurons.__dataclass_fields__]
        arrays += [np.asarray(getattr(a.neural, k)) for k in _ORIGINAL_FIELDS]
    return _digest(*arrays)


def test_original_presets_are_unchanged(tmp_path: Path) -> None:
    """Digests computed with the simulator of main before the varied presets existed (188b57e).

    They pin exact bytes on this platform (NumPy's vectorised exp/sin and the BLAS kernels can
    differ in the last bit across CPUs and versions): a failure after a NumPy or BLAS upgrade,
    with no simulator change, means recomputing them there on the old code, not a regression."""
    tiny, bench = get_preset("tiny"), get_preset("bench")
    assert _trial_digest(tiny, 0, 1, 1) == "16bec7423cede84d"
    assert _trial_digest(bench.with_overrides(trial_seconds=3.0), 0, 7, 2) == "acbc15c2fdbd2374"
    assert _animals_digest(tiny, 0) == "ef15c35a3b3159b4"
    assert _animals_digest(bench, 0) == "88b9e87d9c9be3c6"
    simulate_dataset(tiny.with_overrides(n_animals=2, trials_per_animal=1, trial_seconds=4.0), 0, tmp_path,
                     progress=False)
    assert hashlib.sha256((tmp_path / "dataset.json").read_bytes()).hexdigest()[:16] == "6d780fdd5a9e8169"


def test_varied_presets_match_the_original_sizes_and_transforms() -> None:
    for name in ("tiny", "bench"):
        plain, varied = get_preset(name), get_preset(f"{name}-varied")
        assert plain.variation is None and varied.variation is not None
        assert replace(varied, name=name, variation=None) == plain
    # Same seed: same behaviour, field-of-view transforms and indicator as the original preset,
    # so a comparison of the two changes only what the variation adds.
    _, plain_animals = make_animals(get_preset("bench"), 0)
    _, varied_animals = make_animals(get_preset("bench-varied"), 0)
    for p, v in zip(plain_animals, varied_animals, strict=True):
        assert (p.neural.rotation_rad, p.neural.scale, p.neural.decay_s) == (v.neural.rotation_rad, v.neural.scale,
                                                                             v.neural.decay_s)
        np.testing.assert_array_equal(p.behaviour.transitions, v.behaviour.transitions)
        assert p.neural.deformation is None and v.neural.deformation is not None


def test_varied_is_deterministic_for_a_seed() -> None:
    config = get_preset("tiny-varied").with_overrides(trial_seconds=3.0, frame_shape=(24, 32))
    a = simulate_trial(config, make_animals(config, 5)[1][2], 0, seed=5)
    b = simulate_trial(config, make_animals(config, 5)[1][2], 0, seed=5)
    c = simulate_trial(config, make_animals(config, 6)[1][2], 0, seed=6)
    for field in ("neural", "dff", "pose", "labels"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.neural, c.neural)


def test_visible_overlap_matches_the_configured_fraction() -> None:
    config = get_preset("bench-varied")
    v = config.variation
    assert v is not None
    template, animals = make_animals(config, 0)
    n = len(template)
    for a in animals:
        assert (a.neural.template_index >= 0).sum() == round(v.visible_fraction * n)
        assert (a.neural.template_index == -1).sum() == round(v.extra_fraction * n)
    overlaps = [visible_overlap(a.neural, b.neural) for a, b in itertools.permutations(animals, 2)]
    assert np.mean(overlaps) == pytest.approx(v.visible_fraction, abs=0.03)
    assert 0.55 <= min(overlaps) and max(overlaps) <= 0.85
    # The original preset shows more of the template in every animal (10-20 % missing).
    _, plain = make_animals(get_preset("bench"), 0)
    assert np.mean([visible_overlap(a.neural, b.neural) for a, b in itertools.permutations(plain, 2)]) > 0.8


def test_deformation_is_smooth_bounded_and_non_rigid() -> None:
    rms = 0.03
    grid = field_grid()
    h = 1e-4
    for seed in range(50):
        d = Deformation.sample(np.random.default_rng(seed), rms, 1.0)
        disp = d.displacement(grid)
        # All of it survives rigid alignment: its RMS is the configured non-rigid RMS.
        assert d.non_rigid_rms() == pytest.approx(rms, rel=1e-9)
        assert np.sqrt((disp**2).sum(axis=1).mean()) == pytest.approx(rms, rel=1e-6)
        assert np.linalg.norm(disp, axis=1).max() < 4 * rms  # bounded
        # Smooth and fold-free: the Jacobian stays close to the identity everywhere, and the
        # steepest change is what waves of at most one cycle per field allow (white noise on
        # this grid would be ~10x steeper).
        jx = (d.displacement(grid + [h, 0]) - d.displacement(grid - [h, 0])) / (2 * h)
        jy = (d.displacement(grid + [0, h]) - d.displacement(grid - [0, h])) / (2 * h)
        det = (1 + jx[:, 0]) * (1 + jy[:, 1]) - jx[:, 1] * jy[:, 0]
        assert det.min() > 0.7
        assert np.sqrt((jx**2).sum(axis=1) + (jy**2).sum(axis=1)).max() < 3 * np.pi * rms
        np.testing.assert_allclose(d.invert(d.apply(grid)), grid, atol=1e-9)
    a = Deformation.sample(np.random.default_rng(0), rms, 1.0)
    b = Deformation.sample(np.random.default_rng(1), rms, 1.0)
    assert not np.allclose(a.displacement(grid), b.displacement(grid))


def test_similarity_residual_removes_exactly_a_similarity() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(-1, 1, (50, 2))
    c, s = np.cos(0.3), np.sin(0.3)
    dst = 1.1 * src @ np.array([[c, -s], [s, c]]).T + [0.2, -0.1]
    np.testing.assert_allclose(similarity_residual(src, dst), 0.0, atol=1e-12)
    bent = dst + 0.05 * np.sin(3 * src)
    assert np.abs(similarity_residual(src, bent)).max() > 0.01


def test_anatomy_moves_more_after_rigid_alignment_than_in_the_original_preset() -> None:
    def residual_px(name: str) -> float:
        config = get_preset(name)
        template, animals = make_animals(config, 0)
        res = np.concatenate([template_positions_residual(template, a.neural) for a in animals])
        return float(np.sqrt((res**2).sum(axis=1).mean())) * (min(config.frame_shape) - 1) / 2

    plain, varied = residual_px("bench"), residual_px("bench-varied")
    assert plain == pytest.approx(0.015 * np.sqrt(2) * 127.5, rel=0.15)  # per-neuron jitter only
    assert varied > plain + 0.5  # a few pixels of smooth deformation on top


def test_tuning_is_partly_shared_as_configured() -> None:
    config = get_preset("bench-varied")
    assert config.variation is not None
    rho = config.variation.tuning_shared
    pairs, vs_template = [], []
    for seed in range(3):
        template, animals = make_animals(config, seed)
        pairs += [tuning_correlation(a.neural, b.neural) for a, b in itertools.combinations(animals, 2)]
        vs_template += [template_tuning_correlation(template, a.neural) for a in animals]
    assert np.mean(pairs) == pytest.approx(rho, abs=0.05)
    assert np.mean(vs_template) == pytest.approx(np.sqrt(rho), abs=0.05)
    # The mixing parameter moves it: tuning shared at 0.3 correlates about 0.3.
    low = replace(config, variation=replace(config.variation, tuning_shared=0.3))
    _, animals = make_animals(low, 0)
    assert np.mean([tuning_correlation(a.neural, b.neural) for a, b in itertools.combinations(animals, 2)]) \
        == pytest.approx(0.3, abs=0.1)
    # The original preset's animals share their tuning exactly.
    _, plain = make_animals(get_preset("bench"), 0)
    assert tuning_correlation(plain[0].neural, plain[1].neural) == pytest.approx(1.0)


def test_mix_tuning_keeps_mean_and_spread() -> None:
    rng = np.random.default_rng(0)
    shared, private = rng.normal(2.0, 1.0, 100_000), rng.normal(2.0, 1.0, 100_000)
    mixed = mix_tuning(shared, private, 0.49, np.array(2.0))
    assert mixed.mean() == pytest.approx(2.0, abs=0.02) and mixed.std() == pytest.approx(1.0, abs=0.02)
    assert np.corrcoef(mixed, shared)[0, 1] == pytest.approx(0.7, abs=0.01)


def test_response_gains_per_neuron() -> None:
    config = get_preset("bench-varied")
    assert config.variation is not None
    template, animals = make_animals(config, 0)
    sds = [log_gain_sd(template, a.neural) for a in animals]
    assert np.mean(sds) == pytest.approx(config.variation.gain_sd, abs=0.05)
    _, plain = make_animals(get_preset("bench"), 0)
    assert log_gain_sd(template, plain[0].neural) == 0.0


def test_frames_differ_more_after_rigid_alignment() -> None:
    """As the trainer sees the frames: registration images (trainer.alignment) of one short trial
    per animal, pooled as the encoder pools, brought into the template's frame by the true field-
    of-view transform; pairs of animals then correlate less in the varied preset."""
    corr = {name: np.mean([images(get_preset(name).with_overrides(trial_seconds=6.0), seed, estimate=False)
                           ["aligned_correlation"]["mean"] for seed in (0, 1)]) for name in ("tiny", "tiny-varied")}
    assert corr["tiny"] > 0.65  # the true transform does align the original preset's animals
    assert corr["tiny-varied"] < corr["tiny"] - 0.03, corr


def test_true_alignment_is_the_best_rigid_alignment() -> None:
    """The measurement above is only fair if the simulator's transform, converted to the trainer's
    coordinates, is what aligns the frames best: moving any one animal off it, in any direction,
    lowers its correlation with the others (averaged over animals: one pair is noisy)."""
    from trainer.alignment import registration_image, warp_image

    config = get_preset("tiny").with_overrides(n_animals=6, trial_seconds=6.0)
    _, animals = make_animals(config, 0)
    regs = [registration_image(pooled(simulate_trial(config, a, 0, 0).neural)) for a in animals]
    truth = [true_alignment(a.neural, config.frame_shape) for a in animals]
    aligned = [warp_image(r, t) for r, t in zip(regs, truth, strict=True)]
    inside = np.zeros(regs[0].shape[-2:], dtype=bool)
    inside[3:-3, 3:-3] = True

    def moved_against_others(key: str, step: float) -> float:
        corr = []
        for j, (r, t) in enumerate(zip(regs, truth, strict=True)):
            x = warp_image(r, replace(t, **{key: getattr(t, key) + step}))
            corr += [np.corrcoef(x[:, inside].ravel(), o[:, inside].ravel())[0, 1]
                     for i, o in enumerate(aligned) if i != j]
        return float(np.mean(corr))

    best = moved_against_others("scale", 0.0)
    for key, step in (("shift_x", 1 / 32), ("shift_y", 1 / 32), ("scale", 0.04), ("rotation_deg", 4.0)):
        for sign in (-1, 1):
            assert moved_against_others(key, sign * step) < best - 0.005, (key, sign * step)


def test_variation_rejects_bad_settings() -> None:
    for bad in ({"visible_fraction": 0.0}, {"extra_fraction": -0.1}, {"deformation_rms": 0.08},
                {"deformation_cycles": 0.0}, {"gain_sd": -1.0}, {"tuning_shared": 1.5}):
        with pytest.raises(ValueError):
            AnimalVariation(**bad)


def test_cli_simulates_a_varied_dataset_and_the_ceiling_reads_it(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    assert main(["simulate", "--preset", "tiny-varied", "--animals", "2", "--trials", "1", "--seconds", "3",
                 "--frame-shape", "24", "32", "--no-figure", "--out", str(out)]) == 0
    assert len(list_trials(out)) == 2
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["config"]["variation"]["visible_fraction"] == 0.75
    assert all(a["deformation_rms_px"] > 0 for a in manifest["animals"])

    from tools.simulator.ceiling import ceiling

    config = get_preset("tiny-varied").with_overrides(n_animals=3, trial_seconds=6.0)
    result = ceiling(config, 0, progress=False, history=2)
    assert 0.0 <= result["held_out_animal_accuracy"] <= 1.0 and result["preset"] == "tiny-varied"
