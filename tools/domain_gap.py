"""How big is the domain gap between animals, seen by a linear read-out of raw frames?

Three numbers, all from logistic regression on block-averaged raw frames (standardised on the
training set; only labelled frames):

- within-animal action accuracy: train on some trials of an animal, test on its other trial(s)
  (leave one trial out, averaged over folds and animals);
- held-out-animal action accuracy: train on every other animal, test on the held-out one
  (leave one animal out, averaged);
- identity accuracy: which animal a frame comes from, tested on trials not trained on.

A real gap shows as held-out clearly below within-animal, and identity near 100 %.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from trainer.data.recording import open_trial

TARGET_SIDE = 16  # block-average frames down to about 16 x 16 pixels


@dataclass
class TrialFeatures:
    animal_id: str
    trial_id: str
    x: np.ndarray  # frames x features float32
    y: np.ndarray  # action label per frame (-1 unlabelled)


@dataclass
class GapReport:
    within_animal_accuracy: float | None
    held_out_animal_accuracy: float | None
    identity_accuracy: float | None
    chance_action_accuracy: float | None
    chance_identity_accuracy: float | None
    n_animals: int
    n_trials: int
    n_frames: int
    feature_shape: tuple[int, int]
    per_animal: dict[str, dict[str, float | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["feature_shape"] = list(self.feature_shape)
        return d


def block_average(frames: np.ndarray, factor: tuple[int, int]) -> np.ndarray:
    """Mean over non-overlapping fy x fx blocks (edges that do not fill a block are dropped)."""
    fy, fx = factor
    t, h, w = frames.shape
    hh, ww = h // fy, w // fx
    x = np.asarray(frames[:, : hh * fy, : ww * fx], dtype=np.float32)
    return x.reshape(t, hh, fy, ww, fx).mean(axis=(2, 4))


def load_features(paths: Sequence[str | os.PathLike[str]], target_side: int = TARGET_SIDE,
                  progress: bool = True) -> tuple[list[TrialFeatures], tuple[int, int]]:
    feats: list[TrialFeatures] = []
    shape: tuple[int, int] = (0, 0)
    for p in tqdm(paths, desc="load frames", unit="trial", disable=not progress):
        with open_trial(p) as t:
            h, w = t.frame_shape
            factor = (max(1, h // target_side), max(1, w // target_side))
            xs = []
            for start in range(0, t.n_neural, 256):  # bounded memory on long trials
                xs.append(block_average(t.neural[start : start + 256], factor))
            x = np.concatenate(xs)
            shape = x.shape[1:]
            feats.append(TrialFeatures(t.animal_id, t.trial_id, x.reshape(len(x), -1), t.neural_labels()))
    return feats, shape


def _fit_score(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=300, random_state=seed))
    # One BLAS thread: on a shared, loaded machine threaded BLAS on these small problems is
    # ten times slower, not faster.
    with warnings.catch_warnings(), threadpool_limits(1):
        # A capped number of iterations is a deliberate speed/accuracy trade for a diagnostic.
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        model.fit(x_train, y_train)
    return float((model.predict(x_test) == y_test).mean())


def _stack(trials: Sequence[TrialFeatures], labelled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([t.x for t in trials])
    y = np.concatenate([t.y for t in trials])
    if labelled:
        keep = y >= 0
        return x[keep], y[keep]
    return x, y


def measure_gap(paths: Sequence[str | os.PathLike[str]], *, seed: int = 0, progress: bool = True,
                target_side: int = TARGET_SIDE) -> GapReport:
    """Measure the three accuracies on a dataset's trials (see module doc)."""
    trials, shape = load_features([Path(p) for p in paths], target_side, progress)
    animals = sorted({t.animal_id for t in trials})
    by_animal = {a: [t for t in trials if t.animal_id == a] for a in animals}
    notes: list[str] = []
    per_animal: dict[str, dict[str, float | None]] = {a: {"within": None, "held_out": None} for a in animals}
    jobs: list[tuple[str, str, list[TrialFeatures], list[TrialFeatures]]] = []
    for a in animals:
        mine = by_animal[a]
        if len(mine) >= 2:
            for k in range(len(mine)):
                jobs.append(("within", a, [t for i, t in enumerate(mine) if i != k], [mine[k]]))
        if len(animals) >= 2:
            jobs.append(("held_out", a, [t for t in trials if t.animal_id != a], mine))
    if any(len(v) < 2 for v in by_animal.values()):
        notes.append("animals with a single trial have no within-animal score")
    scores: dict[str, dict[str, list[float]]] = {a: {"within": [], "held_out": []} for a in animals}
    n_folds = min(len(v) for v in by_animal.values())
    identity: list[float] = []
    total = len(jobs) + (n_folds if len(animals) >= 2 and n_folds >= 2 else 0)
    with tqdm(total=total, desc="linear read-outs", unit="fit", disable=not progress) as bar:
        for kind, a, train, test in jobs:
            x_tr, y_tr = _stack(train)
            x_te, y_te = _stack(test)
            if len(np.unique(y_tr)) >= 2 and len(y_te):
                scores[a][kind].append(_fit_score(x_tr, y_tr, x_te, y_te, seed))
            bar.update(1)
        if len(animals) >= 2 and n_folds >= 2:
            for k in range(n_folds):
                train = [t for a in animals for i, t in enumerate(by_animal[a]) if i != k]
                test = [by_animal[a][k] for a in animals]
                x_tr = np.concatenate([t.x for t in train])
                y_tr = np.concatenate([[animals.index(t.animal_id)] * len(t.x) for t in train])
                x_te = np.concatenate([t.x for t in test])
                y_te = np.concatenate([[animals.index(t.animal_id)] * len(t.x) for t in test])
                identity.append(_fit_score(x_tr, y_tr, x_te, y_te, seed))
                bar.update(1)
        else:
            notes.append("identity needs >= 2 animals with >= 2 trials each")
    for a in animals:
        for kind in ("within", "held_out"):
            per_animal[a][kind] = float(np.mean(scores[a][kind])) if scores[a][kind] else None

    def mean_of(kind: str) -> float | None:
        vals = [v[kind] for v in per_animal.values() if v[kind] is not None]
        return float(np.mean(vals)) if vals else None

    _, y_all = _stack(trials)
    chance_action = float(np.bincount(y_all).max() / len(y_all)) if len(y_all) else None
    sizes = np.array([sum(len(t.x) for t in by_animal[a]) for a in animals])
    return GapReport(
        within_animal_accuracy=mean_of("within"),
        held_out_animal_accuracy=mean_of("held_out"),
        identity_accuracy=float(np.mean(identity)) if identity else None,
        chance_action_accuracy=chance_action,
        chance_identity_accuracy=float(sizes.max() / sizes.sum()),
        n_animals=len(animals),
        n_trials=len(trials),
        n_frames=int(sum(len(t.x) for t in trials)),
        feature_shape=(int(shape[0]), int(shape[1])),
        per_animal=per_animal,
        notes=notes,
    )
