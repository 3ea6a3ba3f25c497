"""`WindowSet`: what every evaluation protocol reads, whatever produced the features.

One row per window (the neural frames ending at one frame), in time order within each trial,
so that contiguous blocks of windows are contiguous in time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class EvaluationError(ValueError):
    """Inputs the evaluation cannot use; the message names what is wrong."""


@dataclass(frozen=True)
class WindowSet:
    """Features of windows plus what the probes need to split and score them.

    features: (N, D) float32, one row per window.
    labels: (N,) int64 action index of the window's last frame, -1 when unlabelled.
    animals: (N,) str animal id.
    trials: (N,) str trial key, unique across animals (e.g. ``"fly3/trial02"``).
    class_names: the action names, index = label.
    window: receptive field in frames; windows closer than this overlap, so a split inside a
        trial leaves a gap of this many windows between its train and test parts.
    """

    features: np.ndarray
    labels: np.ndarray
    animals: np.ndarray
    trials: np.ndarray
    class_names: tuple[str, ...]
    window: int = 1

    def __post_init__(self) -> None:
        feats = self.features
        if not isinstance(feats, np.ndarray) or feats.ndim != 2:
            raise EvaluationError(f"features must be a 2-D array (windows x dims), got {getattr(feats, 'shape', type(feats))}")
        n = feats.shape[0]
        if n == 0:
            raise EvaluationError("no windows to evaluate (features has 0 rows)")
        if not np.all(np.isfinite(feats)):
            bad = int(np.count_nonzero(~np.isfinite(feats).all(axis=1)))
            raise EvaluationError(f"features hold NaN or inf in {bad} of {n} windows")
        for name in ("labels", "animals", "trials"):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.shape != (n,):
                raise EvaluationError(f"{name} must have shape ({n},) to match features, got {getattr(arr, 'shape', type(arr))}")
        if not np.issubdtype(self.labels.dtype, np.integer):
            raise EvaluationError(f"labels must be integers (-1 = unlabelled), got dtype {self.labels.dtype}")
        if self.labels.size and (self.labels.min() < -1 or self.labels.max() >= len(self.class_names)):
            raise EvaluationError(
                f"labels must lie in [-1, {len(self.class_names) - 1}] for {len(self.class_names)} class names, "
                f"got [{self.labels.min()}, {self.labels.max()}]"
            )
        if self.window < 1:
            raise EvaluationError(f"window must be >= 1, got {self.window}")
        # A trial key must belong to one animal, or splits by trial would leak across animals.
        pairs = {(t, a) for t, a in zip(self.trials.tolist(), self.animals.tolist())}
        if len(pairs) != len(set(self.trials.tolist())):
            raise EvaluationError("a trial key appears under more than one animal; make trial keys unique (animal/trial)")

    @property
    def animal_ids(self) -> list[str]:
        return sorted(set(self.animals.tolist()))

    def trials_of(self, animal: str) -> list[str]:
        return sorted(set(self.trials[self.animals == animal].tolist()))

    def subset(self, mask: np.ndarray) -> WindowSet:
        return WindowSet(
            self.features[mask], self.labels[mask], self.animals[mask], self.trials[mask],
            self.class_names, self.window,
        )

    def summary(self) -> dict[str, object]:
        labelled = self.labels >= 0
        return {
            "windows": int(self.features.shape[0]),
            "labelled_windows": int(labelled.sum()),
            "dims": int(self.features.shape[1]),
            "animals": len(self.animal_ids),
            "trials": len(set(self.trials.tolist())),
            "window": self.window,
        }


def standardised_per_animal(ws: WindowSet) -> WindowSet:
    """Each animal's features z-scored with that animal's own mean and std (no labels used).

    A diagnostic, not part of the benchmark protocol: if multi-animal accuracy recovers after it,
    the animals differ by an offset/scale of the features (removable by a per-animal
    calibration); if not, identity is entangled with the action information.
    """
    feats = ws.features.astype(np.float32, copy=True)
    for animal in ws.animal_ids:
        m = ws.animals == animal
        feats[m] = (feats[m] - feats[m].mean(axis=0)) / (feats[m].std(axis=0) + 1e-6)
    return WindowSet(feats, ws.labels, ws.animals, ws.trials, ws.class_names, ws.window)
