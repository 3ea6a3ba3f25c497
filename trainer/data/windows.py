"""Windowed datasets for the trainer: W consecutive neural frames with pose and label.

Item (a dict, collated fine by torch's default collate)::

    neural  W x H x W_px float32   raw microscope values (uint16 counts cast to float)
    pose    W x J x 3    float32   pose at each neural frame's timestamp (linear interpolation)
    label   int                    label of the window's last neural frame (-1 if none)
    animal  int                    index into `dataset.animals` (sorted animal ids)
    trial   int                    index into `dataset.paths`
    index   int                    index of the window's last neural frame in its trial

`WindowDataset` keeps frames on disk: each worker process opens its own h5py handles lazily
(handles are never pickled; a fork re-opens them) and reads one contiguous, chunk-aligned slice
per item, so memory stays bounded on datasets larger than RAM. `InMemoryWindowDataset` loads
every trial's frames once (as stored, uint16) and is much faster for small datasets.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from trainer.data.recording import RecordingError, Trial, list_trials, open_trial


class _WindowIndex:
    """Shared metadata: which (trial, last frame) each item is, aligned pose and labels per trial."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], window: int,
                 stride: int = 1, *, in_memory: bool, progress: bool = False) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = list_trials(paths)
        if window < 1 or stride < 1:
            raise ValueError(f"window ({window}) and stride ({stride}) must be >= 1")
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("no trials given")
        self.window = window
        self.stride = stride
        self.pose: list[np.ndarray] = []
        self.neural_labels: list[np.ndarray] = []
        self.frames: list[np.ndarray] = []
        self.joint_names: list[str] = []
        animal_ids: list[str] = []
        trial_ids: list[str] = []
        shapes: set[tuple[int, int]] = set()
        dtypes: set[str] = set()
        class_names: list[str] | None = None
        items: list[np.ndarray] = []
        bar = tqdm(self.paths, desc="load trials" if in_memory else "index trials", unit="trial", disable=not progress)
        for t_idx, p in enumerate(bar):
            with open_trial(p, in_memory=in_memory) as trial:
                shapes.add(trial.frame_shape)
                dtypes.add(str(trial.frame_dtype))
                if trial.class_names:
                    if class_names is not None and class_names != trial.class_names:
                        raise RecordingError(p, f"class names {trial.class_names} differ from other trials' {class_names}")
                    class_names = trial.class_names
                animal_ids.append(trial.animal_id)
                trial_ids.append(trial.trial_id)
                self.pose.append(trial.neural_pose())
                self.neural_labels.append(trial.neural_labels())
                if in_memory:
                    self.frames.append(np.asarray(trial.neural))
                if t_idx and trial.joint_names != self.joint_names:
                    raise RecordingError(p, f"joint names differ from {self.paths[0].name}'s")
                self.joint_names = trial.joint_names
                last = np.arange(window - 1, trial.n_neural, stride)
                items.append(np.stack([np.full(len(last), t_idx), last], axis=1))
        if len(shapes) != 1:
            raise RecordingError(self.paths[0].parent, f"trials have different frame shapes {sorted(shapes)}")
        self.frame_shape: tuple[int, int] = shapes.pop()
        self.frame_dtype = dtypes.pop() if len(dtypes) == 1 else "float32"
        self.class_names = class_names or []
        self.trial_ids = trial_ids
        self.animals: list[str] = sorted(set(animal_ids))
        self.trial_animal = np.array([self.animals.index(a) for a in animal_ids], dtype=np.int64)
        self.items = np.concatenate(items) if items else np.zeros((0, 2), dtype=np.int64)
        if len(self.items) == 0:
            raise ValueError(f"no trial has at least {window} neural frames")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> np.ndarray:
        """Label of every item (for samplers, class weights and probes)."""
        out = np.empty(len(self.items), dtype=np.int64)
        for t, labels in enumerate(self.neural_labels):
            rows = self.items[:, 0] == t
            out[rows] = labels[self.items[rows, 1]]
        return out

    @property
    def item_animals(self) -> np.ndarray:
        """Animal index of every item."""
        return self.trial_animal[self.items[:, 0]]

    def _item(self, idx: int, frames: np.ndarray) -> dict[str, Any]:
        t, last = (int(v) for v in self.items[idx])
        first = last - self.window + 1
        return {
            "neural": np.asarray(frames, dtype=np.float32),
            "pose": self.pose[t][first : last + 1],
            "label": int(self.neural_labels[t][last]),
            "animal": int(self.trial_animal[t]),
            "trial": t,
            "index": last,
        }

    def _check(self, idx: int) -> int:
        if idx < 0:
            idx += len(self.items)
        if not 0 <= idx < len(self.items):
            raise IndexError(f"window {idx} out of range for {len(self.items)} windows")
        return idx


class WindowDataset(_WindowIndex):
    """Frames stay on disk; each process opens its own read-only handles on first use."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], window: int,
                 stride: int = 1, *, progress: bool = False) -> None:
        super().__init__(paths, window, stride, in_memory=False, progress=progress)
        self._handles: dict[int, Trial] = {}
        self._pid = os.getpid()

    def __getitem__(self, idx: int) -> dict[str, Any]:
        idx = self._check(idx)
        t, last = (int(v) for v in self.items[idx])
        first = last - self.window + 1
        try:
            frames = self._trial(t).neural[first : last + 1]
        except (OSError, RuntimeError) as exc:  # e.g. a chunk whose checksum no longer matches
            raise RecordingError(self.paths[t], f"cannot read neural frames {first}..{last} ({exc})") from None
        return self._item(idx, frames)

    def _trial(self, t: int) -> Trial:
        if self._pid != os.getpid():  # forked into a worker: never share the parent's HDF5 handles
            self._handles = {}
            self._pid = os.getpid()
        trial = self._handles.get(t)
        if trial is None:
            trial = self._handles[t] = open_trial(self.paths[t])
        return trial

    def close(self) -> None:
        for trial in self._handles.values():
            trial.close()
        self._handles = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: h5py may already be gone
            pass


class InMemoryWindowDataset(_WindowIndex):
    """Every trial's frames in RAM, as stored (uint16 stays uint16 until an item is built)."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], window: int,
                 stride: int = 1, *, progress: bool = False) -> None:
        super().__init__(paths, window, stride, in_memory=True, progress=progress)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        idx = self._check(idx)
        t, last = (int(v) for v in self.items[idx])
        return self._item(idx, self.frames[t][last - self.window + 1 : last + 1])

    @property
    def nbytes(self) -> int:
        return sum(f.nbytes for f in self.frames)
