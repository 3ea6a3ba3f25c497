"""The training set as one table of neural frames: pooled frames, pose segments, labels, animals.

Why a frame table rather than a dataset of windows: cross-animal swapping replaces individual
frames of a window by frames of another animal, so training needs random access by frame across
all animals. Every neural frame is passed once through the encoder's own first layer
(`FrameEncoder.preprocess`, the average pool that the exported graph also runs) and kept pooled:
a 256 x 256 uint16 frame becomes 32 x 32 float32 (16x smaller), so a batch is a handful of
array gathers (no DataLoader workers needed; pooling cost is paid once, not per epoch). Raw
frames are read from HDF5 chunk by chunk, so memory is bounded by the pooled table, which can
live in a memory-mapped file (`cache_path`) when even that exceeds RAM.

Pose segments: for neural frame j at time t_j, `pose_steps` poses evenly spaced over
(t_j - 1/rate, t_j], linearly interpolated on the pose clock (`Trial.pose_at`). Concatenated over
a window they form the window's pose sequence at `pose_steps` x the neural rate (100 Hz pose and
16 Hz imaging give 6 steps: the pose clock's full detail), aligned by timestamps.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from trainer.alignment import evenly_spaced, warp
from trainer.calibration import SessionCalibration, calibrate_group
from trainer.data.recording import RecordingError, open_trial
from trainer.models.neural import FrameEncoder
from trainer.swapping import animal_scale, body_anchor_joints, normalise_poses

CHUNK_FRAMES = 256
MAX_POSE_STEPS = 8


@dataclass
class FrameTable:
    pooled: np.ndarray        # (N, h, w) float32 pooled raw counts
    pose: np.ndarray          # (N, S, J, 3) float32 normalised pose segments
    labels: np.ndarray        # (N,) int64, -1 unlabelled
    animal: np.ndarray        # (N,) int64 index into `animals`
    trial: np.ndarray         # (N,) int64 index into `trial_keys`
    starts: np.ndarray        # (M,) int64 first frame of every window lying inside one trial
    animals: list[str]
    trial_keys: list[str]     # "animal/trial"
    class_names: list[str]
    joint_names: list[str]
    window: int
    pose_steps: int
    frame_rate_hz: float
    frame_shape: tuple[int, int]
    frame_dtype: str
    pose_scales: dict[str, float] = field(default_factory=dict)
    body_anchor: list[str] = field(default_factory=list)  # joints centred on in pose normalisation
    # Session calibration (encoders with "session" normalisation; see `calibrate_table`): the
    # group template, each animal's calibration, and its per-pixel log mean stacked (A, h, w).
    template: np.ndarray | None = None
    calibrations: dict[str, SessionCalibration] = field(default_factory=dict)
    pixel_mean: np.ndarray | None = None
    # Per-animal normalisation, measured after training (`trainer.train.measure_animal_statistics`):
    # feature statistics (A, F) and embedding statistics (A, D) of every animal.
    feature_mean: np.ndarray | None = None
    feature_std: np.ndarray | None = None
    embedding_mean: np.ndarray | None = None
    embedding_std: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_windows(self) -> int:
        return int(self.starts.shape[0])

    def window_frames(self, starts: torch.Tensor) -> torch.Tensor:
        """(B,) window starts -> (B, W) global frame indices."""
        return starts.unsqueeze(1) + torch.arange(self.window)

    def window_labels(self) -> np.ndarray:
        """Label of every window: its last frame's (-1 if unlabelled)."""
        return self.labels[self.starts + self.window - 1]

    def gather(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, W) frame indices -> pooled windows (B, W, h, w) and pose windows (B, W*S, J, 3)."""
        idx = frames.numpy()
        pooled = torch.from_numpy(np.ascontiguousarray(self.pooled[idx.ravel()])).view(*idx.shape, *self.pooled.shape[1:])
        pose = torch.from_numpy(self.pose[idx.ravel()]).view(idx.shape[0], -1, *self.pose.shape[2:])
        return pooled, pose

    def frame_baselines(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor | None:
        """Per-pixel log baseline of each frame's animal (its calibration's `log_mean`), shaped
        like the frames' pooled images ((..., h, w)); None for an uncalibrated table."""
        if self.pixel_mean is None:
            return None
        return torch.from_numpy(self.pixel_mean)[torch.from_numpy(self.animal[np.asarray(frames)])]

    def frame_feature_statistics(self, frames: np.ndarray) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Feature mean and std (..., F) of each frame's animal; (None, None) before they are measured."""
        return _of_animals(self.animal[np.asarray(frames)], self.feature_mean, self.feature_std)

    def window_embedding_statistics(self, starts: np.ndarray) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Embedding mean and std (M, D) of each window's animal; (None, None) before they are measured."""
        return _of_animals(self.animal[np.asarray(starts)], self.embedding_mean, self.embedding_std)

    def summary(self) -> dict[str, object]:
        return {
            "animals": len(self.animals), "trials": len(self.trial_keys), "frames": self.n_frames,
            "windows": self.n_windows, "labelled_windows": int((self.window_labels() >= 0).sum()),
            "frame_shape": list(self.frame_shape), "pooled_shape": list(self.pooled.shape[1:]),
            "frame_rate_hz": self.frame_rate_hz, "window": self.window, "pose_steps": self.pose_steps,
            "joints": len(self.joint_names), "body_anchor": self.body_anchor,
        }


def _of_animals(animals: np.ndarray, mean: np.ndarray | None,
                std: np.ndarray | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if mean is None or std is None:
        return None, None
    idx = torch.from_numpy(animals)
    return torch.from_numpy(mean)[idx], torch.from_numpy(std)[idx]


def dataset_fingerprint(paths: Sequence[Path]) -> str:
    """sha256 over the trial files' names and sizes: identifies the dataset a checkpoint came from
    without reading gigabytes (a changed file of the same size is not detected)."""
    items = sorted((p.name, p.stat().st_size) for p in paths)
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def build_frame_table(
    paths: Sequence[Path],
    frame_encoder: FrameEncoder,
    window: int,
    pose_steps: int = 0,
    remove_animal_mean: bool = False,
    cache_dir: Path | None = None,
    progress: bool = True,
    body_anchor: Sequence[str] = (),
) -> FrameTable:
    """Read trials `paths`, pool their frames with `frame_encoder.preprocess`, align pose segments.

    With `cache_dir`, the pooled frames live in a memory-mapped `.npy` there, named by the
    dataset fingerprint and the pool factor, and later runs on the same data (other methods,
    seeds, resumes) reuse it instead of reading and pooling every raw frame again.

    Poses are centred on the `body_anchor` joints (`trainer.swapping.body_anchor_joints`; empty:
    the skeleton's own rule). Raises `RecordingError` (naming the file) for unreadable or
    inconsistent trials and `ValueError` when no trial is long enough for one window or an anchor
    joint is not in the skeleton."""
    if not paths:
        raise ValueError("no trial files to train on")
    metas = []
    for p in paths:
        with open_trial(p) as t:
            metas.append((t.animal_id, t.trial_id, t.n_neural, t.frame_shape, str(t.frame_dtype),
                          t.neural_rate_hz, t.pose_rate_hz, list(t.joint_names), list(t.class_names)))
    shapes = {m[3] for m in metas}
    if len(shapes) != 1:
        raise RecordingError(paths[0].parent, f"trials have different frame shapes {sorted(shapes)}")
    frame_shape = shapes.pop()
    if frame_shape != frame_encoder.frame_shape:
        raise ValueError(f"frames are {frame_shape} but the encoder was built for {frame_encoder.frame_shape}")
    joints = {tuple(m[7]) for m in metas}
    if len(joints) != 1:
        first = metas[0][7]
        other = next(i for i, m in enumerate(metas) if m[7] != first)
        raise RecordingError(paths[0].parent, f"trials have different joint names: {paths[0].name} has {first}, "
                                              f"{paths[other].name} has {metas[other][7]}; one skeleton per dataset")
    classes = {tuple(m[8]) for m in metas if m[8]}
    if len(classes) > 1:
        raise RecordingError(paths[0].parent, f"trials disagree on class names: {sorted(classes)}")
    rates = np.array([m[5] for m in metas])
    rate = float(np.median(rates))
    if np.any(np.abs(rates - rate) > 0.05 * rate):
        raise RecordingError(paths[0].parent, f"neural frame rates differ by more than 5 % across trials: {sorted(set(rates.tolist()))}")
    if pose_steps <= 0:
        pose_steps = int(np.clip(round(float(np.median([m[6] for m in metas])) / rate), 1, MAX_POSE_STEPS))
    joint_names = list(joints.pop())
    anchor = body_anchor_joints(joint_names, body_anchor)
    n_total = sum(m[2] for m in metas)
    ph, pw = frame_encoder.pooled_shape
    factor = frame_encoder.downsample.factor
    cached = None
    pooled: np.ndarray
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache_file = cache_dir / f"pooled-{dataset_fingerprint(paths)[:16]}-x{factor}.npy"
        if cache_file.is_file():
            cached = np.load(cache_file, mmap_mode="r")
            if cached.shape != (n_total, ph, pw) or cached.dtype != np.float32:
                cached = None  # stale: rebuilt below
        if cached is not None:
            pooled = cached
        else:
            tmp_cache = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
            pooled = np.lib.format.open_memmap(tmp_cache, mode="w+", dtype=np.float32, shape=(n_total, ph, pw))
    else:
        pooled = np.empty((n_total, ph, pw), dtype=np.float32)
    raw_pose = np.empty((n_total, pose_steps, len(joint_names), 3), dtype=np.float32)
    labels = np.empty(n_total, dtype=np.int64)
    trial_idx = np.empty(n_total, dtype=np.int64)
    animal_names = sorted({m[0] for m in metas})
    animal = np.empty(n_total, dtype=np.int64)
    starts: list[np.ndarray] = []
    trial_keys: list[str] = []
    bar = tqdm(total=n_total, desc="pooling frames", unit="frame", disable=not progress, leave=False)
    offset = 0
    frame_encoder = frame_encoder.eval()
    for i, p in enumerate(paths):
        with open_trial(p) as t, torch.no_grad():
            n = t.n_neural
            sl = slice(offset, offset + n)
            for c in range(0, n if cached is None else 0, CHUNK_FRAMES):
                raw = torch.from_numpy(np.asarray(t.neural[c : c + CHUNK_FRAMES], dtype=np.float32))
                pooled[offset + c : offset + c + len(raw)] = frame_encoder.preprocess(raw).squeeze(1).numpy()
                bar.update(len(raw))
            step = 1.0 / t.neural_rate_hz
            frac = (np.arange(pose_steps) - (pose_steps - 1)) / pose_steps  # (-(S-1)/S .. 0]
            times = t.neural_times[:, None] + frac[None, :] * step
            raw_pose[sl] = t.pose_at(times.ravel()).reshape(n, pose_steps, len(joint_names), 3)
            labels[sl] = t.neural_labels()
            trial_idx[sl] = i
            animal[sl] = animal_names.index(t.animal_id)
            trial_keys.append(f"{t.animal_id}/{t.trial_id}")
            if n >= window:
                starts.append(np.arange(offset, offset + n - window + 1))
            offset += n
    bar.close()
    if not starts:
        raise ValueError(f"no trial has at least {window} neural frames (the encoder's window)")
    if not np.all(np.isfinite(raw_pose)):
        raise RecordingError(paths[0].parent, "pose holds NaN or inf; fill or drop missing joints before training")
    pose = np.empty_like(raw_pose)
    scales: dict[str, float] = {}
    for a, name in enumerate(animal_names):
        sel = animal == a
        scales[name] = animal_scale(raw_pose[sel][:, -1], anchor)
        pose[sel] = normalise_poses(raw_pose[sel], anchor, scales[name])
        if remove_animal_mean:
            pose[sel] -= pose[sel][:, -1].mean(axis=0)
    if cache_dir is not None and cached is None:
        assert isinstance(pooled, np.memmap)
        pooled.flush()
        del pooled
        os.replace(tmp_cache, cache_file)  # complete files only: a crash leaves no half cache
        pooled = np.load(cache_file, mmap_mode="r")
    return FrameTable(
        pooled=pooled, pose=pose, labels=labels, animal=animal, trial=trial_idx,
        starts=np.concatenate(starts), animals=animal_names, trial_keys=trial_keys,
        class_names=list(classes.pop()) if classes else [], joint_names=joint_names, window=window,
        pose_steps=pose_steps, frame_rate_hz=rate, frame_shape=frame_shape,
        frame_dtype=metas[0][4], pose_scales=scales, body_anchor=[joint_names[i] for i in anchor],
    )


def calibrate_table(table: FrameTable, progress: bool = True) -> None:
    """Calibrate every animal of `table` (trainer/calibration.py) and move its pooled frames into
    the template's space, in place. A memory-mapped table gets a memory-mapped aligned copy
    beside it, so memory stays bounded."""
    per_animal = {}
    for a, name in enumerate(table.animals):  # only the frames the statistics use are read
        idx = np.flatnonzero(table.animal == a)
        per_animal[name] = table.pooled[idx[evenly_spaced(len(idx))]]
    template, calibrations = calibrate_group(per_animal)
    source = table.pooled
    if isinstance(source, np.memmap):
        target = np.lib.format.open_memmap(Path(source.filename).with_suffix(f".aligned{os.getpid()}.npy"),
                                           mode="w+", dtype=np.float32, shape=source.shape)
    else:
        target = source if source.flags.writeable else np.empty_like(source)
    bar = tqdm(total=table.n_frames, desc="aligning frames", unit="frame", disable=not progress, leave=False)
    for a, name in enumerate(table.animals):
        idx = np.flatnonzero(table.animal == a)
        for c in range(0, len(idx), CHUNK_FRAMES * 16):
            part = idx[c : c + CHUNK_FRAMES * 16]
            frames = torch.from_numpy(np.ascontiguousarray(source[part]))
            target[part] = warp(frames, calibrations[name].alignment).numpy()
            bar.update(len(part))
    bar.close()
    if isinstance(target, np.memmap):
        target.flush()
        path = Path(target.filename)
        del target
        target = np.load(path, mmap_mode="r")
        path.unlink()  # the mapping stays valid; nothing is left behind on disk
    table.pooled = target
    table.template = template
    table.calibrations = calibrations
    table.pixel_mean = np.stack([calibrations[n].log_mean for n in table.animals])


def select_trials(paths: Sequence[Path], animals: Sequence[str], exclude: Sequence[str]) -> list[Path]:
    """Trials of the selected animals (all when `animals` is empty) minus the excluded ones."""
    keep = []
    seen: set[str] = set()
    for p in paths:
        with open_trial(p) as t:
            seen.add(t.animal_id)
            if (not animals or t.animal_id in animals) and t.animal_id not in exclude:
                keep.append(Path(p))
    unknown = (set(animals) | set(exclude)) - seen
    if unknown:
        raise ValueError(f"animals {sorted(unknown)} are not in the dataset (it has {sorted(seen)})")
    if not keep:
        raise ValueError("the animal selection leaves no trial to train on")
    return keep
