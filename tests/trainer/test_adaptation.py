"""trainer/adaptation.py: the online-centring rule, which checkpoints ask for it, and the
evaluation reading it per animal."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.adaptation import OnlineCentring, online_centring_of
from trainer.evaluation.embed import online_centred
from trainer.evaluation.windows import WindowSet


def test_the_rule_is_a_cumulative_mean_then_an_exponential_one() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    rule = OnlineCentring(prior_frames=4, time_constant_frames=10)
    out = rule.centre(x)
    mean = np.zeros(3)
    for t in range(len(x)):
        np.testing.assert_allclose(out[t], x[t] - mean, rtol=1e-5, atol=1e-6)  # causal: rows before t only
        seen = t + 1
        # the calibration counts as 4 frames at mean 0; every frame alike until 10 frames of weight
        weight = max(1.0 / (4 + seen), 1.0 / 10)
        mean = mean + weight * (x[t] - mean)
    # the first six rows: a plain cumulative mean with the prior's four zeros
    np.testing.assert_allclose(out[6], x[6] - x[:6].sum(axis=0) / 10, rtol=1e-5, atol=1e-6)


def test_a_stream_offset_is_removed_and_a_bout_survives() -> None:
    """An offset the calibration missed decays; a long bout of one action is not erased, because
    the mean of a long stream moves little (the reason for a cumulative mean, not a short one)."""
    rng = np.random.default_rng(1)
    rule = OnlineCentring.from_seconds(15.0, 300.0, 16.0)
    assert (rule.prior_frames, rule.time_constant_frames) == (240, 4800)
    offset = np.array([2.0, -1.0])
    background = rng.normal(size=(3000, 2)) + offset
    out = rule.centre(background)
    # the prior's weight fades as 240 / (240 + n): ~2.0 at first, < 0.3 after 2500 frames
    assert out[:20, 0].mean() > 1.5 and np.abs(out[-500:].mean(axis=0)).max() < 0.3
    bout = np.vstack([background, np.tile(offset + [3.0, 0.0], (160, 1))])  # 10 s of one action
    assert rule.centre(bout)[-1, 0] > 2.5


def test_which_checkpoints_ask_for_it() -> None:
    assert online_centring_of({}, "embedding", 16.0) == OnlineCentring(240, 4800)  # configs from before the option
    assert online_centring_of({"adaptation": {"prior_s": 1.0, "time_constant_s": 2.0}}, "both", 10.0) == OnlineCentring(10, 20)
    assert online_centring_of({"adaptation": {"online_centring": False}}, "embedding", 16.0) is None
    assert online_centring_of({}, "features", 16.0) is None  # the embedding is not centred per animal
    assert online_centring_of({}, "none", 16.0) is None
    with pytest.raises(ValueError):
        OnlineCentring(0, 10)


def test_the_evaluation_centres_each_animal_on_its_own_stream() -> None:
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(30, 4)).astype(np.float32)
    animals = np.array(["a"] * 10 + ["b"] * 12 + ["a"] * 8)  # a's second trial after b's
    ws = WindowSet(feats, np.zeros(30, np.int64), animals, animals, ("x",), 1)
    rule = OnlineCentring(2, 5)
    out = online_centred(ws, rule)
    a = animals == "a"
    np.testing.assert_allclose(out.features[a], rule.centre(feats[a]), atol=1e-6)
    np.testing.assert_allclose(out.features[~a], rule.centre(feats[~a]), atol=1e-6)
    assert np.array_equal(out.labels, ws.labels) and np.array_equal(ws.features, feats)  # input untouched
