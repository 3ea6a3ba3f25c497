"""Shared fixtures for recording tests: small valid trials built in code, written to tmp dirs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trainer.data.recording import write_trial
from trainer.data.schema import ACTION_NAMES, JOINT_NAMES


def trial_arrays(seed: int = 0, n_neural: int = 40, shape: tuple[int, int] = (12, 10), pose_rate: float = 100.0,
                 neural_rate: float = 16.0, neural_start: float = 0.013) -> dict[str, Any]:
    """Arguments for write_trial with distinct, checkable values (frame k is filled with k)."""
    rng = np.random.default_rng(seed)
    neural_times = neural_start + np.arange(n_neural) / neural_rate
    n_pose = int(np.ceil((neural_times[-1] + 0.1) * pose_rate))
    pose_times = np.arange(n_pose) / pose_rate
    neural = (np.arange(n_neural, dtype=np.uint16)[:, None, None] + rng.integers(0, 3, (n_neural, *shape))).astype(np.uint16)
    pose = rng.normal(0, 1, (n_pose, len(JOINT_NAMES), 3)).astype(np.float32)
    labels = (np.arange(n_pose) // 37 % (len(ACTION_NAMES) + 1) - 1).astype(np.int64)  # includes -1 runs
    return dict(animal_id=f"fly{seed}", trial_id="t0", neural=neural, neural_times=neural_times, pose=pose,
                pose_times=pose_times, joint_names=JOINT_NAMES, labels=labels, class_names=ACTION_NAMES,
                neural_rate_hz=neural_rate, pose_rate_hz=pose_rate)


@pytest.fixture
def make_arrays() -> Callable[..., dict[str, Any]]:
    """The trial_arrays builder, as a fixture (test modules cannot import conftest)."""
    return trial_arrays


@pytest.fixture
def small_dataset(tmp_path: Path) -> list[Path]:
    """Three trials of two animals with different lengths."""
    paths = []
    for animal, trial, n in (("flyA", "t0", 30), ("flyA", "t1", 25), ("flyB", "t0", 35)):
        arrays = trial_arrays(seed=len(paths), n_neural=n)
        arrays.update(animal_id=animal, trial_id=trial)
        paths.append(write_trial(tmp_path / f"{animal}_{trial}.h5", **arrays))
    return paths
