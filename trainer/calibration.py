"""Session calibration: what the encoder needs to know about one animal's preparation, learned
without labels or pose from a stretch of its recording.

A calibration is (1) the field-of-view alignment to the model's template (`trainer.alignment`)
and (2) every template pixel's mean log1p count over the stretch. The encoder's "session"
normalisation subtracts that mean from the frame's log1p counts (a log-ratio to the session's
baseline, as dF/F is a ratio), then standardises the frame: neuron brightness, background and
detector offset differ from animal to animal, and centring each pixel on its own session
removes them (the per-channel centring that real-time BCIs apply to electrodes, applied here to
pixels after alignment). Per-frame standardisation then removes any global gain (laser power),
which shifts every log pixel alike. Per-pixel *scaling* was measured and dropped: the pixel
spread is ~1 % of the log signal, so a ±30 % gain change (or the brightness augmentation) moved
z-scores by tens of units and training stalled at chance.

Training calibrates every animal of the training set against a group template; the export
command calibrates the animal the bundle will decode (a minute of its frames is enough) and
bakes the calibration into the exported graph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.alignment import (
    MAX_FRAMES,
    Alignment,
    build_template,
    estimate_alignment,
    evenly_spaced,
    registration_image,
    warp,
)


@dataclass(frozen=True)
class SessionCalibration:
    alignment: Alignment
    log_mean: np.ndarray  # (h, w) float32, template space: mean log1p count of every pixel
    frames: int           # how many frames it was estimated from

    def to_dict(self) -> dict[str, Any]:
        return {"alignment": self.alignment.to_dict(), "log_mean": self.log_mean.tolist(), "frames": self.frames}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> SessionCalibration:
        return SessionCalibration(Alignment.from_dict(d["alignment"]),
                                  np.asarray(d["log_mean"], dtype=np.float32), int(d["frames"]))

    def summary(self) -> dict[str, Any]:
        return {**self.alignment.to_dict(), "frames": self.frames}

    def log_ratio(self, pooled: np.ndarray) -> np.ndarray:
        """(N, h, w) pooled counts of this animal -> aligned log1p counts minus the pixel
        baseline: the encoder's session normalisation before its per-frame standardisation."""
        aligned = warp(torch.from_numpy(np.ascontiguousarray(pooled, dtype=np.float32)), self.alignment).numpy()
        return np.log1p(np.clip(aligned, 0.0, None)) - self.log_mean


def _subsample(pooled: np.ndarray) -> np.ndarray:
    return np.asarray(pooled[evenly_spaced(len(pooled))], dtype=np.float32)


def pixel_log_mean(aligned: np.ndarray) -> np.ndarray:
    """(N, h, w) aligned pooled counts -> (h, w) mean log1p count of every pixel."""
    return np.log1p(np.clip(aligned, 0.0, None)).mean(axis=0).astype(np.float32)


def calibrate(pooled: np.ndarray, template: np.ndarray) -> SessionCalibration:
    """Calibrate one animal from its pooled frames (N, h, w) against a template (registration
    image, `trainer.alignment.registration_image` layout)."""
    frames = _subsample(pooled)
    if len(frames) < 2:
        raise ValueError(f"a calibration needs at least 2 frames, got {len(frames)}")
    alignment = estimate_alignment(registration_image(frames), template)
    return _with_statistics(frames, alignment)


def _with_statistics(frames: np.ndarray, alignment: Alignment) -> SessionCalibration:
    aligned = warp(torch.from_numpy(frames), alignment).numpy()
    return SessionCalibration(alignment, pixel_log_mean(aligned), len(frames))


def calibrate_group(pooled_by_animal: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, SessionCalibration]]:
    """Template of a group of animals and each animal's calibration against it."""
    names = list(pooled_by_animal)
    frames = {n: _subsample(pooled_by_animal[n]) for n in names}
    template, alignments = build_template([registration_image(frames[n]) for n in names])
    return template, {n: _with_statistics(frames[n], a) for n, a in zip(names, alignments, strict=True)}


@dataclass
class CalibrationSet:
    """A checkpoint's template and its training animals' calibrations; animals it has not seen
    are calibrated against the template from their own frames."""

    template: np.ndarray
    animals: dict[str, SessionCalibration]

    @staticmethod
    def from_checkpoint(ckpt: Mapping[str, Any]) -> CalibrationSet | None:
        stored = ckpt.get("calibration")
        if not stored:
            return None
        return CalibrationSet(np.asarray(stored["template"], dtype=np.float32),
                              {name: SessionCalibration.from_dict(c) for name, c in stored["animals"].items()})

    def for_animal(self, animal: str, pooled: np.ndarray | None = None) -> SessionCalibration:
        """The stored calibration of a training animal, else one estimated from `pooled` frames."""
        if animal in self.animals:
            return self.animals[animal]
        if pooled is None:
            raise ValueError(f"animal {animal!r} was not in training ({sorted(self.animals)}); "
                             "calibrate it from its own frames")
        return calibrate(pooled, self.template)


def pooled_frames_of_trials(paths: Sequence[Path], frame_encoder: torch.nn.Module) -> tuple[str, np.ndarray]:
    """Read a calibration recording (trial files of one animal), pool its frames with the
    encoder's own first layer, at most `MAX_FRAMES` spread evenly over it. Returns the animal id
    and (N, h, w) pooled counts. Errors name the file and the problem."""
    from trainer.data.recording import open_trial

    if not paths:
        raise ValueError("no calibration recording given")
    animals: set[str] = set()
    counts = []
    for path in paths:
        with open_trial(path) as trial:
            if tuple(trial.frame_shape) != tuple(frame_encoder.frame_shape):
                raise ValueError(f"{path}: frames are {trial.frame_shape} but the encoder expects "
                                 f"{tuple(frame_encoder.frame_shape)}")
            animals.add(trial.animal_id)
            counts.append(trial.n_neural)
    if len(animals) != 1:
        raise ValueError(f"calibration trials come from several animals {sorted(animals)}; calibrate one animal")
    total = sum(counts)
    if total < 2:
        raise ValueError(f"calibration trials hold {total} frames; a calibration needs at least 2")
    keep = set(evenly_spaced(total).tolist())
    pooled, offset = [], 0
    for path, n in zip(paths, counts, strict=True):
        with open_trial(path) as trial, torch.inference_mode():
            idx = [i - offset for i in range(offset, offset + n) if i in keep]
            for c in range(0, len(idx), 256):
                raw = torch.from_numpy(np.asarray(trial.neural[idx[c:c + 256]], dtype=np.float32))
                pooled.append(frame_encoder.preprocess(raw).squeeze(1).numpy())
        offset += n
    return animals.pop(), np.concatenate(pooled)
