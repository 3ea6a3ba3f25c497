"""The frames a replay sends: recorded trials, chained, limited, cycled, preloaded into RAM.

A measurement must not read a file between two sends (an HDF5 read holds the GIL while the
receiver thread tries to stamp an arriving action), so `preloaded` copies the frames into one
array before the clock starts; every frame is then a read-only view that is never modified,
so it may be in flight (zero-copy) while later ones are sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class ReplayError(RuntimeError):
    """The replay cannot run (bad arguments, no decoder answering, unreadable data)."""


@dataclass
class ReplayData:
    """Frames to replay with their acquisition times, (optional) labels and sequence numbers.

    `seq[i]` is frame i's sequence number relative to the replay's start (default 0, 1, 2, ...);
    `chain` leaves a jump between trials so the decoder starts a fresh window for each trial,
    as it would when a microscope starts a new acquisition.
    """

    frames: Any  # indexable (T, H, W): an h5py dataset is read one frame at a time
    times_s: np.ndarray
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    name: str = ""
    seq: np.ndarray | None = None
    _owners: list[Any] = field(default_factory=list, repr=False)  # objects keeping files open

    def __post_init__(self) -> None:
        what = self.name or "data"
        if len(self.frames) != len(self.times_s):
            raise ValueError(f"{what}: {len(self.frames)} frames but {len(self.times_s)} timestamps")
        if self.labels is not None and len(self.labels) != len(self.frames):
            raise ValueError(f"{what}: {len(self.frames)} frames but {len(self.labels)} labels")
        if self.seq is None:
            self.seq = np.arange(len(self.frames), dtype=np.int64)
        elif len(self.seq) != len(self.frames) or np.any(np.diff(self.seq) <= 0) or (len(self.seq) and self.seq[0] < 0):
            raise ValueError(f"{what}: seq must hold one increasing, non-negative number per frame")

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, i: int) -> np.ndarray:
        """Frame i as a C-contiguous array: a view of preloaded frames (never modified, so it
        may still be in flight after publish), or a fresh array read from the file."""
        return np.ascontiguousarray(self.frames[i])

    @property
    def in_memory(self) -> bool:
        return isinstance(self.frames, np.ndarray) or bool(getattr(self.frames, "in_memory", False))

    def preloaded(self) -> ReplayData:
        """The same replay with every frame read into one read-only array in RAM (a no-op when
        they already are): what a measurement sends, so that no send waits for a file read."""
        if self.in_memory or len(self) == 0:
            return self
        first = np.asarray(self.frames[0])
        frames = np.empty((len(self), *first.shape), dtype=first.dtype)
        for i in range(len(self)):
            frames[i] = self.frames[i]
        frames.flags.writeable = False
        return ReplayData(frames=frames, times_s=self.times_s, labels=self.labels, class_names=self.class_names,
                          name=self.name, seq=self.seq, _owners=[self])

    def limited(self, max_frames: int | None) -> ReplayData:
        if max_frames is None or max_frames >= len(self):
            return self
        assert self.seq is not None
        return ReplayData(
            frames=_Head(self.frames, max_frames),
            times_s=self.times_s[:max_frames],
            labels=None if self.labels is None else self.labels[:max_frames],
            class_names=self.class_names,
            name=self.name,
            seq=self.seq[:max_frames],
            _owners=[self],
        )

    def close(self) -> None:
        """Close the recordings behind this data (h5py files); safe to call twice."""
        for owner in self._owners:
            close = getattr(owner, "close", None)
            if callable(close):
                close()


TRIAL_SEQ_GAP = 1000  # sequence jump between chained trials: far above any window, so it resets

class _Chain:
    """Frames of several trials indexed as one sequence, read lazily from each."""

    def __init__(self, parts: Sequence[Any]) -> None:
        self._parts = list(parts)
        self._ends = np.cumsum([len(p) for p in self._parts])

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self._ends, i, side="right"))
        start = int(self._ends[k - 1]) if k else 0
        return self._parts[k][i - start]


def chain(datasets: Sequence[ReplayData]) -> ReplayData:
    """Several trials as one replay: times run on (one frame interval between trials) and
    sequence numbers jump by TRIAL_SEQ_GAP at each trial boundary."""
    if not datasets:
        raise ValueError("no trials to replay")
    if len(datasets) == 1:
        return datasets[0]
    labelled = [d.labels is not None for d in datasets]
    names = {d.class_names for d in datasets if d.labels is not None}
    if len(names) > 1:
        raise ValueError("the trials disagree on class names")
    times, seqs, t_next, s_next = [], [], 0.0, 0
    for d in datasets:
        assert d.seq is not None
        t = np.asarray(d.times_s, dtype=np.float64)
        step = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
        times.append(t - (t[0] if len(t) else 0.0) + t_next)
        t_next = (times[-1][-1] + step) if len(t) else t_next
        seqs.append(d.seq - (d.seq[0] if len(d.seq) else 0) + s_next)
        s_next = (int(seqs[-1][-1]) + TRIAL_SEQ_GAP) if len(d.seq) else s_next
    return ReplayData(
        frames=_Chain([d.frames for d in datasets]),
        times_s=np.concatenate(times),
        labels=np.concatenate([d.labels for d in datasets]) if all(labelled) else None,  # type: ignore[misc]
        class_names=next(iter(names)) if all(labelled) and names else (),
        name=f"{len(datasets)} trials",
        seq=np.concatenate(seqs).astype(np.int64),
        _owners=list(datasets),
    )


class _Head:
    """The first n items of an indexable, without reading them."""

    def __init__(self, inner: Any, n: int) -> None:
        self._inner, self._n = inner, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._inner[i]


def load_replay_data(path: Path) -> list[ReplayData]:
    """One ReplayData per trial: a single `.h5` file, or every trial of a dataset directory."""
    from trainer.data.recording import list_trials, open_trial  # tools/ may import everything

    path = Path(path)
    if path.is_dir():
        files = list_trials(path)  # raises RecordingError (a ValueError) when there is none
    elif path.is_file():
        files = [path]
    else:
        raise ReplayError(f"{path} does not exist")
    out = []
    for file in files:
        trial = open_trial(file)
        labels = trial.neural_labels() if trial.labels is not None else None
        out.append(
            ReplayData(
                frames=trial.neural,
                times_s=np.asarray(trial.neural_times, dtype=np.float64),
                labels=None if labels is None else np.asarray(labels, dtype=np.int64),
                class_names=tuple(trial.class_names),
                name=f"{trial.animal_id}/{trial.trial_id}",
                _owners=[trial],
            )
        )
    return out
