"""Linear-probe protocols on frozen window features (the paper's evaluation).

- single-animal: for each animal, a probe trained on some of its trials is tested on its other
  trials (two folds over the animal's trials, interleaved; every window is tested once).
- multi-animal: for each animal in turn, a probe trained on all the other animals is tested on it.
- identity: a probe predicts the animal from the features; trained on one half of every animal's
  trials and tested on the other half (two folds). Near chance means the features carry no
  identity; raw frames give near 100 %.

Label fractions: the probe sees a fraction of its training windows, chosen as contiguous blocks
of ``block`` windows (a random subset of blocks per seed). Windows a frame apart are nearly
identical, so dropping single windows at random would remove almost no information; dropping
blocks removes whole stretches of behaviour, as labelling less video would.

Every protocol also runs with a constant predictor (the training split's most frequent class):
that is the chance level reported beside the accuracies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from trainer.evaluation.windows import EvaluationError, WindowSet
from trainer.probe import LinearProbe

PROTOCOLS = ("single_animal", "multi_animal", "identity")
DEFAULT_FRACTIONS = (0.5, 1.0)


class MajorityProbe:
    """Predicts the most frequent training class whatever the input: the chance level."""

    def fit(self, x: np.ndarray, y: np.ndarray, n_classes: int = 0) -> MajorityProbe:
        values, counts = np.unique(y, return_counts=True)
        self.value_ = values[np.argmax(counts)]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(x.shape[0], self.value_)


@dataclass
class Score:
    """One scored unit: a held-out animal (or fold) for one label fraction and seed."""

    protocol: str
    fraction: float
    seed: int
    unit: str          # held-out animal for single/multi-animal, fold for identity
    accuracy: float    # percent
    n_train: int
    n_test: int


@dataclass
class ProtocolResult:
    scores: list[Score] = field(default_factory=list)
    chance: list[Score] = field(default_factory=list)
    # Pooled over held-out animals and seeds at the largest fraction: rows true, columns predicted.
    confusion: dict[str, np.ndarray] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """{protocol: {fraction: {"mean": %, "std": %, "n": units}}}, and the same for chance."""
        return {
            "accuracy": _aggregate(self.scores),
            "chance": _aggregate(self.chance),
        }

    def to_json(self) -> dict[str, object]:
        return {
            "summary": self.summary(),
            "scores": [asdict(s) for s in self.scores],
            "chance_scores": [asdict(s) for s in self.chance],
            "confusion": {k: v.tolist() for k, v in self.confusion.items()},
        }


def fraction_key(fraction: float) -> str:
    return f"{fraction:.1f}" if round(fraction, 1) == fraction else f"{fraction:g}"


def _aggregate(scores: Sequence[Score]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for proto in PROTOCOLS:
        for frac in sorted({s.fraction for s in scores if s.protocol == proto}):
            acc = np.array([s.accuracy for s in scores if s.protocol == proto and s.fraction == frac])
            out.setdefault(proto, {})[fraction_key(frac)] = {
                "mean": float(acc.mean()), "std": float(acc.std()), "n": int(acc.size),
            }
    return out


def block_subsample(ws: WindowSet, idx: np.ndarray, fraction: float, block: int, rng: np.random.Generator) -> np.ndarray:
    """Keep ``fraction`` of the windows ``idx`` as whole blocks of ``block`` consecutive windows.

    Blocks are cut within each trial; at least one block is kept per trial so every trial of the
    training split contributes.
    """
    if not 0.0 < fraction <= 1.0:
        raise EvaluationError(f"label fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return idx
    kept: list[np.ndarray] = []
    for trial in sorted(set(ws.trials[idx].tolist())):
        t_idx = idx[ws.trials[idx] == trial]
        blocks = [t_idx[i:i + block] for i in range(0, t_idx.size, block)]
        n_keep = max(1, int(round(fraction * len(blocks))))
        chosen = np.sort(rng.choice(len(blocks), size=n_keep, replace=False))
        kept.extend(blocks[c] for c in chosen)
    return np.concatenate(kept)


def two_folds(ws: WindowSet, idx: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split the windows ``idx`` of one animal into two (train, test) folds by trial.

    With two or more trials, trials alternate between the folds (sorted by key). With a single
    trial, it is cut in time into halves with a gap of ``ws.window`` windows, so no frame is
    shared between a training and a test window.
    """
    trials = sorted(set(ws.trials[idx].tolist()))
    if len(trials) >= 2:
        halves = [set(trials[0::2]), set(trials[1::2])]
        masks = [np.isin(ws.trials[idx], list(h)) for h in halves]
        parts = [idx[m] for m in masks]
    else:
        mid = idx.size // 2
        gap = ws.window
        parts = [idx[: max(0, mid - gap // 2)], idx[mid + (gap - gap // 2):]]
    if any(p.size == 0 for p in parts):
        return []
    return [(parts[0], parts[1]), (parts[1], parts[0])]


def _accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    return float(100.0 * np.mean(pred == true))


def _units(ws: WindowSet, protocol: str) -> Iterator[tuple[str, list[tuple[np.ndarray, np.ndarray]]]]:
    """(unit name, [(train idx, test idx), ...]) for one protocol; folds of a unit are pooled."""
    labelled = np.flatnonzero(ws.labels >= 0)
    everything = np.arange(ws.features.shape[0])
    if protocol == "multi_animal":
        for animal in ws.animal_ids:
            test = labelled[ws.animals[labelled] == animal]
            train = labelled[ws.animals[labelled] != animal]
            if test.size and train.size:
                yield animal, [(train, test)]
    elif protocol == "single_animal":
        for animal in ws.animal_ids:
            folds = two_folds(ws, labelled[ws.animals[labelled] == animal])
            if folds:
                yield animal, folds
    elif protocol == "identity":
        # Fold k of the identity probe = fold k of every animal, trained jointly over animals.
        per_animal = [two_folds(ws, everything[ws.animals == a]) for a in ws.animal_ids]
        if all(per_animal):
            for k in range(2):
                train = np.concatenate([f[k][0] for f in per_animal])
                test = np.concatenate([f[k][1] for f in per_animal])
                yield f"fold{k}", [(train, test)]
    else:
        raise EvaluationError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")


def run_protocols(
    ws: WindowSet,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seeds: Sequence[int] = (0, 1),
    protocols: Sequence[str] = PROTOCOLS,
    block: int = 32,
    probe_c: float = 1.0,
    probe_max_iter: int = 300,
    progress: Callable[[str], None] | None = None,
) -> ProtocolResult:
    """Run every protocol x fraction x seed with the linear probe and with the chance predictor.

    The probe is `trainer.probe.LinearProbe` (the same one that fits checkpoints' action heads),
    with inverse L2 strength ``probe_c``.

    A fraction of 1.0 uses every training window, so the probe is the same for every seed and
    runs once (its score is repeated per seed only through the aggregation of held-out units).
    """
    if len(ws.animal_ids) < 2 and ("multi_animal" in protocols or "identity" in protocols):
        raise EvaluationError(f"multi-animal and identity protocols need >= 2 animals, got {ws.animal_ids}")
    result = ProtocolResult()
    n_classes = len(ws.class_names)
    animal_index = {a: i for i, a in enumerate(ws.animal_ids)}
    top_fraction = max(fractions)
    for protocol in protocols:
        if protocol == "identity":
            targets = np.array([animal_index[a] for a in ws.animals.tolist()])
            n_targets = len(animal_index)
        else:
            targets = ws.labels
            n_targets = n_classes
        confusion = np.zeros((n_targets, n_targets), dtype=np.int64)
        units = list(_units(ws, protocol))
        if not units:
            raise EvaluationError(f"{protocol}: no usable split (each animal needs windows in two parts of its data)")
        for fraction in fractions:
            run_seeds = list(seeds) if fraction < 1.0 else list(seeds)[:1]
            for seed in run_seeds:
                rng = np.random.default_rng(seed)
                for unit, folds in units:
                    preds, trues, chance_preds, n_train = [], [], [], 0
                    for train, test in folds:
                        train = block_subsample(ws, train, fraction, block, rng)
                        x_tr, y_tr = ws.features[train], targets[train]
                        probe = LinearProbe(c=probe_c, max_iter=probe_max_iter).fit(x_tr, y_tr, n_targets)
                        preds.append(probe.predict(ws.features[test]))
                        chance_preds.append(MajorityProbe().fit(x_tr, y_tr).predict(ws.features[test]))
                        trues.append(targets[test])
                        n_train += train.size
                    pred, true = np.concatenate(preds), np.concatenate(trues)
                    n_test = int(true.size)
                    result.scores.append(Score(protocol, fraction, seed, unit, _accuracy(pred, true), n_train, n_test))
                    result.chance.append(
                        Score(protocol, fraction, seed, unit, _accuracy(np.concatenate(chance_preds), true), n_train, n_test)
                    )
                    if fraction == top_fraction:
                        np.add.at(confusion, (true, pred), 1)
                if progress is not None:
                    progress(f"{protocol} {fraction_key(fraction)} seed {seed}")
        result.confusion[protocol] = confusion
    return result
