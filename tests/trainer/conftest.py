"""Helpers for the trainer's own tests: a small, fast, learnable multi-animal dataset.

Each animal does a random sequence of actions; the pose oscillates with an action-specific
pattern and the neural frames light action-specific blobs, with a per-animal gain, baseline and
field-of-view shift (a small domain gap). Written with the project's recording writer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer.data.recording import write_trial
from trainer.data.schema import ACTION_NAMES

JOINTS = ["RF_ThC", "RF_Claw", "LF_ThC", "LF_Claw", "R_antenna", "L_antenna"]


def write_synthetic_dataset(out: Path, animals: int = 3, trials: int = 2, frames: int = 64,
                            shape: tuple[int, int] = (32, 32), seed: int = 0,
                            labelled: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_classes = len(ACTION_NAMES)
    neural_rate, pose_rate = 16.0, 96.0
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    centres = rng.uniform(4, min(shape) - 4, size=(n_classes, 2))
    paths = []
    for a in range(animals):
        gain = rng.uniform(0.7, 1.4)
        offset = rng.uniform(50, 150)
        shift = rng.uniform(-2, 2, size=2)
        scale = rng.uniform(0.8, 1.2)
        for t in range(trials):
            n_pose = int(frames * pose_rate / neural_rate)
            seg = np.repeat(rng.integers(0, n_classes, size=n_pose // 24 + 1), 24)[:n_pose]
            pose_times = np.arange(n_pose) / pose_rate
            phase = 2 * np.pi * 3.0 * pose_times
            base = np.array([[1, 0, 0], [2, -1, 0], [-1, 0, 0], [-2, -1, 0], [0.5, 2, 0], [-0.5, 2, 0]], float)
            pose = np.tile(base, (n_pose, 1, 1)) * scale
            pose[:, 1, 1] += 0.3 * (seg % 3) * np.sin(phase + seg)
            pose[:, 3, 2] += 0.3 * (seg // 3) * np.cos(phase)
            pose += rng.normal(0, 0.01, pose.shape) + 5.0  # global position, removed by normalisation
            neural_times = np.arange(frames) / neural_rate
            label_n = seg[np.searchsorted(pose_times, neural_times, side="right") - 1]
            cy = centres[label_n, 0] + shift[0]
            cx = centres[label_n, 1] + shift[1]
            blob = np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) / 8.0)
            counts = offset + gain * 800.0 * blob
            neural = rng.poisson(counts).astype(np.uint16)
            paths.append(write_trial(
                out / f"a{a}_t{t}.h5", animal_id=f"animal{a}", trial_id=f"trial{t}", neural=neural,
                neural_times=neural_times, pose=pose.astype(np.float32), pose_times=pose_times,
                joint_names=JOINTS, labels=seg.astype(np.int64) if labelled else None,
                neural_rate_hz=neural_rate, pose_rate_hz=pose_rate,
            ))
    return paths


@pytest.fixture(scope="session")
def trainer_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 animals x 2 trials x 64 frames of 32 x 32, labelled."""
    out = tmp_path_factory.mktemp("trainer_data")
    write_synthetic_dataset(out)
    return out


# Settings small enough for a training step in tens of milliseconds.
_FAST = [
    "progress=false", "threads=1",
    "model.pooled_size=16", "model.channels=[4, 8]", "model.features=8", "model.temporal_channels=8",
    "model.embedding_dim=8", "model.projection_dim=8", "model.pose_channels=8", "model.window=4",
    "optim.epochs=1", "optim.steps_per_epoch=3", "optim.batch_size=16", "swap.k=4",
]


@pytest.fixture
def fast_overrides() -> list[str]:
    """Config overrides for a training run of a few hundred milliseconds."""
    return list(_FAST)


@pytest.fixture
def write_dataset():  # type: ignore[no-untyped-def]
    """The dataset writer, for tests that need their own variant (unlabelled, one animal...)."""
    return write_synthetic_dataset
