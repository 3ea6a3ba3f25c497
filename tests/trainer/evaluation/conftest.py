"""Synthetic window sets whose right answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.evaluation.windows import WindowSet

CLASSES = ("a", "b", "c", "d")


def make_windows(
    n_animals: int = 4,
    trials_per_animal: int = 2,
    windows_per_trial: int = 120,
    dims: int = 8,
    action_signal: float = 10.0,
    identity_signal: float = 0.0,
    seed: int = 0,
    window: int = 4,
) -> WindowSet:
    """Features = action_signal * one-hot(action) + identity_signal * animal code + unit noise.

    Actions come in bouts of 10 windows, every class once per 40 windows.
    """
    rng = np.random.default_rng(seed)
    animal_codes = rng.normal(size=(n_animals, dims))
    feats, labels, animals, trials = [], [], [], []
    for a in range(n_animals):
        for t in range(trials_per_animal):
            # Bouts cycle through every class in a shuffled order, so short stretches hold all classes.
            n_cycles = windows_per_trial // (10 * len(CLASSES)) + 1
            bouts = np.concatenate([rng.permutation(len(CLASSES)) for _ in range(n_cycles)])
            lab = np.repeat(bouts, 10)[:windows_per_trial]
            onehot = np.zeros((windows_per_trial, dims))
            onehot[np.arange(windows_per_trial), lab] = 1.0
            x = action_signal * onehot + identity_signal * animal_codes[a] + rng.normal(size=(windows_per_trial, dims))
            feats.append(x)
            labels.append(lab)
            animals += [f"fly{a}"] * windows_per_trial
            trials += [f"fly{a}/t{t}"] * windows_per_trial
    return WindowSet(
        np.concatenate(feats).astype(np.float32), np.concatenate(labels).astype(np.int64),
        np.array(animals), np.array(trials), CLASSES, window,
    )


@pytest.fixture(scope="session")
def windows_factory():  # type: ignore[no-untyped-def]
    """The synthetic window-set builder (test modules cannot import conftest under importlib mode)."""
    return make_windows
