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

For encoders with per-animal normalisation (`trainer.models.neural.AnimalNorm`) a calibration
also carries (3) the mean and std of every per-frame feature and of the embedding over the same
stretch (`calibrate_encoder`): they depend on the trained weights, so they are measured after
training, from the same unlabelled frames.

Training calibrates every animal of the training set against a group template; the export
command calibrates the animal the bundle will decode (a minute of its frames is enough) and
bakes the calibration into the exported graph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.alignment import (
    MAX_FRAMES,
    Alignment,
    build_template,
    edge_of_search,
    estimate_alignment,
    evenly_spaced,
    registration_image,
    warp,
)


_STATISTICS = ("feature_mean", "feature_std", "embedding_mean", "embedding_std")


@dataclass(frozen=True)
class SessionCalibration:
    alignment: Alignment
    log_mean: np.ndarray  # (h, w) float32, template space: mean log1p count of every pixel
    frames: int           # how many frames it was estimated from
    # per-animal normalisation (trainer.models.neural.AnimalNorm): float32 mean and std of the
    # encoder's per-frame features (F,) and of its embedding (D,); None where it has none
    feature_mean: np.ndarray | None = None
    feature_std: np.ndarray | None = None
    embedding_mean: np.ndarray | None = None
    embedding_std: np.ndarray | None = None

    def _statistics(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in _STATISTICS if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        return {"alignment": self.alignment.to_dict(), "log_mean": self.log_mean.tolist(), "frames": self.frames,
                **{k: v.tolist() for k, v in self._statistics().items()}}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> SessionCalibration:
        stats = {k: np.asarray(d[k], dtype=np.float32) for k in _STATISTICS if k in d}
        return SessionCalibration(Alignment.from_dict(d["alignment"]),
                                  np.asarray(d["log_mean"], dtype=np.float32), int(d["frames"]), **stats)

    def summary(self) -> dict[str, Any]:
        return {**self.alignment.to_dict(), "frames": self.frames,
                "normalisation_statistics": sorted(self._statistics())}

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


def standardisation(x: torch.Tensor, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(F,) mean and std over the rows of `x` (N, F), as `AnimalNorm` applies them."""
    x = x.double()
    mean = x.mean(dim=0)
    std = torch.sqrt(((x - mean) ** 2).mean(dim=0) + eps)
    return mean.float().numpy(), std.float().numpy()


@torch.no_grad()
def with_encoder_statistics(calibration: SessionCalibration, encoder: torch.nn.Module, pooled: np.ndarray,
                            aligned: bool = False, batch: int = 512) -> SessionCalibration:
    """`calibration` plus the statistics of the encoder's per-animal normalisation, measured on
    one animal's contiguous pooled frames (N, h, w) (at most the first `MAX_FRAMES`), raw
    (aligned here with the calibration) or already in template space: the feature statistics
    over every frame, then the embedding statistics over every window of the normalised
    features. Eval mode; the encoder's training flag is restored."""
    frame_encoder, temporal = encoder.frame_encoder, encoder.temporal
    frames = torch.from_numpy(np.ascontiguousarray(pooled[:MAX_FRAMES], dtype=np.float32))
    if len(frames) < encoder.window:
        raise ValueError(f"a calibration of this encoder needs at least {encoder.window} consecutive frames "
                         f"(its window), got {len(frames)}")
    if not aligned:
        frames = warp(frames, calibration.alignment)
    was_training = encoder.training
    encoder.eval()
    try:
        baseline = torch.from_numpy(calibration.log_mean).view(1, 1, *calibration.log_mean.shape)
        raw = torch.cat([frame_encoder.raw_features(part.unsqueeze(1), baseline.expand(len(part), -1, -1, -1))
                         for part in frames.split(batch)])
        stats: dict[str, np.ndarray] = {}
        feats = raw
        if frame_encoder.animal_norm is not None:
            stats["feature_mean"], stats["feature_std"] = standardisation(raw, frame_encoder.animal_norm.eps)
            feats = (raw - torch.from_numpy(stats["feature_mean"])) / torch.from_numpy(stats["feature_std"])
        if temporal.animal_norm is not None:
            windows = feats.unfold(0, encoder.window, 1).permute(0, 2, 1)  # (N - W + 1, W, F)
            emb = torch.cat([temporal.raw_embedding(part.contiguous()) for part in windows.split(batch)])
            stats["embedding_mean"], stats["embedding_std"] = standardisation(emb, temporal.animal_norm.eps)
    finally:
        encoder.train(was_training)
    return replace(calibration, **stats)


def calibrate_encoder(encoder: torch.nn.Module, pooled: np.ndarray, template: np.ndarray) -> SessionCalibration:
    """Everything a session-calibrated `NeuralEncoder` needs to decode one animal, from its
    unlabelled contiguous pooled frames (N, h, w): alignment and pixel baseline (`calibrate`),
    plus the statistics of its per-animal normalisation when it has one."""
    calibration = calibrate(pooled, template)
    if not encoder.normalises_per_animal:
        return calibration
    return with_encoder_statistics(calibration, encoder, pooled)


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
        """The stored calibration of a training animal, else one estimated from `pooled` frames
        (without the encoder's normalisation statistics: `calibrate_encoder` adds those)."""
        if animal in self.animals:
            return self.animals[animal]
        if pooled is None:
            raise ValueError(f"animal {animal!r} was not in training ({sorted(self.animals)}); "
                             "calibrate it from its own frames")
        return calibrate(pooled, self.template)


# A new animal's registration score is suspect when it is both this far below the training
# animals' lowest and below this fraction of their median. Training animals built the template,
# so their scores are biased upwards (more so the fewer they are): 0.75 against 0.95 for two
# training animals was a good fit on the test data, 0.59 against 0.76-0.89 a bad one.
SCORE_MARGIN = 0.1
SCORE_RATIO = 0.75


def calibration_quality(calibration: SessionCalibration, reference: CalibrationSet) -> dict[str, Any]:
    """How far to trust a new animal's calibration: its registration score beside the training
    animals' (against the same template), and warnings when the fit sits at the edge of the
    search range or scores clearly below every training animal."""
    scores = sorted(c.alignment.score for c in reference.animals.values())
    score = calibration.alignment.score
    warnings = edge_of_search(calibration.alignment)
    if scores and score < scores[0] - SCORE_MARGIN and score < SCORE_RATIO * float(np.median(scores)):
        warnings.append(f"registration score {score:.2f} is far below the training animals' "
                        f"({scores[0]:.2f}-{scores[-1]:.2f}): the field of view may not match the template")
    return {"score": round(score, 4), "training_scores": [round(scores[0], 4), round(scores[-1], 4)] if scores else [],
            "warnings": warnings}


def pooled_frames_of_trials(paths: Sequence[Path], frame_encoder: torch.nn.Module) -> tuple[str, np.ndarray]:
    """Read a calibration recording (trial files of one animal), pool its frames with the
    encoder's own first layer: its first `MAX_FRAMES` frames, contiguous (the per-animal
    normalisation's embedding statistics are measured on whole windows). Returns the animal id
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
    pooled, left = [], MAX_FRAMES
    for path, n in zip(paths, counts, strict=True):
        with open_trial(path) as trial, torch.inference_mode():
            for c in range(0, min(n, left), 256):
                raw = torch.from_numpy(np.asarray(trial.neural[c:min(c + 256, left)], dtype=np.float32))
                pooled.append(frame_encoder.preprocess(raw).squeeze(1).numpy())
        left -= min(n, left)
        if left == 0:
            break
    return animals.pop(), np.concatenate(pooled)
