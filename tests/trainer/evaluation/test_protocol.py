from __future__ import annotations

import numpy as np
import pytest

from trainer.evaluation.protocol import block_subsample, run_protocols, two_folds
from trainer.evaluation.windows import EvaluationError, WindowSet


def test_separable_actions_score_100_and_identity_free_features_sit_at_chance(windows_factory) -> None:
    ws = windows_factory(action_signal=10.0, identity_signal=0.0, windows_per_trial=160)
    res = run_protocols(ws, fractions=(0.5, 1.0), seeds=(0, 1), block=20).summary()
    for proto in ("single_animal", "multi_animal"):
        assert res["accuracy"][proto]["1.0"]["mean"] == pytest.approx(100.0)
        # Half the blocks of one trial may miss a class entirely; nearly everything stays right.
        assert res["accuracy"][proto]["0.5"]["mean"] > 90.0
    # 4 animals with equal windows: chance is 25 %; identity-free features must not beat it by much.
    assert res["chance"]["identity"]["1.0"]["mean"] == pytest.approx(25.0, abs=1.0)
    assert abs(res["accuracy"]["identity"]["1.0"]["mean"] - 25.0) < 8.0


def test_identity_is_found_when_features_carry_it(windows_factory) -> None:
    ws = windows_factory(action_signal=0.0, identity_signal=5.0)
    res = run_protocols(ws, protocols=("identity",)).summary()
    assert res["accuracy"]["identity"]["1.0"]["mean"] == pytest.approx(100.0)
    assert res["accuracy"]["identity"]["0.5"]["mean"] == pytest.approx(100.0)


def test_noise_features_give_chance_level_actions(windows_factory) -> None:
    ws = windows_factory(action_signal=0.0, identity_signal=0.0, windows_per_trial=300)
    res = run_protocols(ws, protocols=("multi_animal",), fractions=(1.0,)).summary()
    acc = res["accuracy"]["multi_animal"]["1.0"]["mean"]
    chance = res["chance"]["multi_animal"]["1.0"]["mean"]
    assert abs(acc - chance) < 10.0
    assert acc < 40.0


def test_units_are_held_out_animals_and_confusion_counts_every_test_window(windows_factory) -> None:
    ws = windows_factory(n_animals=3)
    res = run_protocols(ws, fractions=(1.0,), seeds=(0,))
    multi = [s for s in res.scores if s.protocol == "multi_animal"]
    assert sorted(s.unit for s in multi) == ["fly0", "fly1", "fly2"]
    # Each held-out animal is tested on all its labelled windows; training never includes it.
    for s in multi:
        assert s.n_test == 240 and s.n_train == 480
    assert res.confusion["multi_animal"].sum() == ws.features.shape[0]
    assert np.trace(res.confusion["multi_animal"]) == ws.features.shape[0]  # separable -> diagonal
    single = [s for s in res.scores if s.protocol == "single_animal"]
    assert all(s.n_test == 240 for s in single)  # two folds pooled: every window tested once


def test_unlabelled_windows_are_not_used_for_actions(windows_factory) -> None:
    ws = windows_factory(n_animals=2)
    labels = ws.labels.copy()
    labels[::2] = -1
    ws2 = WindowSet(ws.features, labels, ws.animals, ws.trials, ws.class_names, ws.window)
    res = run_protocols(ws2, protocols=("multi_animal",), fractions=(1.0,))
    assert all(s.n_test == 120 for s in res.scores)


def test_half_the_labels_means_half_the_blocks_of_each_trial(windows_factory) -> None:
    ws = windows_factory(n_animals=1, trials_per_animal=2, windows_per_trial=128)
    idx = np.arange(ws.features.shape[0])
    kept = block_subsample(ws, idx, 0.5, block=32, rng=np.random.default_rng(0))
    assert kept.size == 128
    for trial in ("fly0/t0", "fly0/t1"):
        k = kept[ws.trials[kept] == trial]
        assert k.size == 64
        # whole blocks: every kept window's block is kept entirely
        blocks = set((k - k.min() // 128 * 128) // 32)
        assert len(blocks) == 2
    a = block_subsample(ws, idx, 0.5, 32, np.random.default_rng(1))
    b = block_subsample(ws, idx, 0.5, 32, np.random.default_rng(1))
    assert np.array_equal(a, b)
    with pytest.raises(EvaluationError, match="fraction"):
        block_subsample(ws, idx, 0.0, 32, np.random.default_rng(0))


def test_single_trial_animal_is_split_in_time_with_a_gap(windows_factory) -> None:
    ws = windows_factory(n_animals=1, trials_per_animal=1, windows_per_trial=100, window=8)
    folds = two_folds(ws, np.arange(100))
    (tr, te), _ = folds
    assert tr.max() + ws.window < te.min() + 1
    assert tr.size + te.size == 100 - ws.window


def test_bad_inputs_are_named(windows_factory) -> None:
    ws = windows_factory(n_animals=2)
    with pytest.raises(EvaluationError, match="NaN"):
        bad = ws.features.copy()
        bad[3, 0] = np.nan
        WindowSet(bad, ws.labels, ws.animals, ws.trials, ws.class_names)
    with pytest.raises(EvaluationError, match="labels must have shape"):
        WindowSet(ws.features, ws.labels[:-1], ws.animals, ws.trials, ws.class_names)
    with pytest.raises(EvaluationError, match="labels must lie"):
        WindowSet(ws.features, ws.labels + 10, ws.animals, ws.trials, ws.class_names)
    with pytest.raises(EvaluationError, match="more than one animal"):
        WindowSet(ws.features, ws.labels, ws.animals, np.full(ws.trials.shape, "t0"), ws.class_names)
    one = windows_factory(n_animals=1)
    with pytest.raises(EvaluationError, match=">= 2 animals"):
        run_protocols(one)


def test_per_animal_standardisation_removes_an_animal_offset(windows_factory) -> None:
    from trainer.evaluation.windows import standardised_per_animal

    ws = windows_factory(action_signal=3.0, identity_signal=20.0, windows_per_trial=160)
    before = run_protocols(ws, protocols=("identity",), fractions=(1.0,)).summary()["accuracy"]["identity"]["1.0"]["mean"]
    after = run_protocols(standardised_per_animal(ws), protocols=("identity",), fractions=(1.0,)).summary()
    assert before == pytest.approx(100.0)
    assert after["accuracy"]["identity"]["1.0"]["mean"] < 40.0  # 4 animals: chance 25 %
