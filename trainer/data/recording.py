"""One HDF5 file per trial: reader (validated, lazy) and atomic writer.

Layout (schema version 1)::

    /                     attrs: schema_version, animal_id, trial_id, neural_rate_hz, pose_rate_hz
    /neural/frames        T_n x H x W  uint16 (as microscopes write) or float32, chunked per few frames
    /neural/times         T_n float64 seconds, strictly increasing
    /pose/points3d        T_b x J x 3 float32 millimetres
    /pose/times           T_b float64 seconds, strictly increasing (its own clock and rate)
    /pose/joint_names     J strings
    /labels/actions       T_b int16, -1 = unlabelled              (optional group)
    /labels/class_names   C strings

Neural and pose keep their own clocks; alignment happens in code by timestamps
(`Trial.neural_labels`, `Trial.pose_at`).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from trainer.data.schema import ACTION_NAMES, SCHEMA_VERSION, UNLABELLED

NEURAL_DTYPES = (np.dtype(np.uint16), np.dtype(np.float32))
# Frames per HDF5 chunk: a training window reads a few whole chunks, never a whole trial.
CHUNK_FRAMES = 8
# Chunk cache per open file: enough for a window of 256 x 256 frames to stay cached between reads.
CHUNK_CACHE_BYTES = 32 * 1024 * 1024
_STR = h5py.string_dtype(encoding="utf-8")


class RecordingError(ValueError):
    """A recording (file or directory) is missing, malformed or unsupported; the message names it."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class Trial:
    """One trial: neural frames and 3D pose on their own clocks, labels on the pose clock."""

    path: Path
    animal_id: str
    trial_id: str
    neural: h5py.Dataset | np.ndarray  # T_n x H x W, uint16 or float32
    neural_times: np.ndarray  # T_n float64 s
    pose: np.ndarray  # T_b x J x 3 float32 mm
    pose_times: np.ndarray  # T_b float64 s
    joint_names: list[str]
    labels: np.ndarray | None  # T_b int, -1 unlabelled
    class_names: list[str]
    neural_rate_hz: float
    pose_rate_hz: float
    attrs: dict[str, Any] = field(default_factory=dict)
    _file: h5py.File | None = field(default=None, repr=False)

    @property
    def n_neural(self) -> int:
        return int(self.neural.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return int(self.neural.shape[1]), int(self.neural.shape[2])

    @property
    def frame_dtype(self) -> np.dtype:
        return np.dtype(self.neural.dtype)

    def neural_labels(self) -> np.ndarray:
        """One label per neural frame: the pose frame at or just before its timestamp (-1 if none)."""
        out = np.full(self.n_neural, UNLABELLED, dtype=np.int64)
        if self.labels is None:
            return out
        idx = np.searchsorted(self.pose_times, self.neural_times, side="right") - 1
        ok = idx >= 0
        out[ok] = self.labels[idx[ok]]
        return out

    def pose_at(self, times: np.ndarray) -> np.ndarray:
        """Pose linearly interpolated at `times` (clamped to the first/last pose frame): len x J x 3."""
        times = np.asarray(times, dtype=np.float64)
        flat = self.pose.reshape(len(self.pose), -1)
        idx = np.searchsorted(self.pose_times, times, side="right")
        hi = np.clip(idx, 0, len(self.pose_times) - 1)
        lo = np.clip(idx - 1, 0, len(self.pose_times) - 1)
        t_lo, t_hi = self.pose_times[lo], self.pose_times[hi]
        span = np.where(t_hi > t_lo, t_hi - t_lo, 1.0)
        w = np.clip((times - t_lo) / span, 0.0, 1.0)[:, None]
        out = flat[lo] * (1.0 - w) + flat[hi] * w
        return out.reshape(len(times), *self.pose.shape[1:]).astype(np.float32)

    def neural_pose(self) -> np.ndarray:
        """Pose at each neural frame's timestamp: T_n x J x 3 float32."""
        return self.pose_at(self.neural_times)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Trial:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def list_trials(directory: str | os.PathLike[str]) -> list[Path]:
    """The trial files (`*.h5`, flat) of a dataset directory, sorted by name."""
    d = Path(directory)
    if not d.exists():
        raise RecordingError(d, "dataset directory does not exist")
    if not d.is_dir():
        raise RecordingError(d, "not a directory (a dataset is a directory of *.h5 trials)")
    paths = sorted(p for p in d.glob("*.h5") if p.is_file() and not p.name.startswith("."))
    if not paths:
        raise RecordingError(d, "no *.h5 trial files in this directory")
    return paths


def _decode_names(values: Any) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(values).tolist()]


def _check_times(path: Path, name: str, times: np.ndarray, n: int) -> None:
    if times.ndim != 1 or len(times) != n:
        raise RecordingError(path, f"{name} has shape {times.shape}, expected ({n},) to match its frames")
    if not np.all(np.isfinite(times)):
        raise RecordingError(path, f"{name} contains NaN or infinite timestamps")
    if n > 1 and not np.all(np.diff(times) > 0):
        bad = int(np.argmax(~(np.diff(times) > 0)))
        raise RecordingError(
            path, f"{name} is not strictly increasing (at index {bad + 1}: {times[bad]} -> {times[bad + 1]})"
        )


def _check_rate(path: Path, name: str, rate: Any) -> float:
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise RecordingError(path, f"{name} is {rate!r}, expected a positive number") from None
    if not np.isfinite(value) or value <= 0:
        raise RecordingError(path, f"{name} is {value}, expected a positive number")
    return value


def _validate(
    path: Path,
    *,
    animal_id: Any,
    trial_id: Any,
    neural_shape: tuple[int, ...],
    neural_dtype: np.dtype,
    neural_times: np.ndarray,
    pose: np.ndarray,
    pose_times: np.ndarray,
    joint_names: Sequence[str],
    labels: np.ndarray | None,
    class_names: Sequence[str],
    neural_rate_hz: Any,
    pose_rate_hz: Any,
) -> tuple[float, float]:
    """Every check shared by reader and writer; raises RecordingError naming the problem."""
    for name, value in (("animal_id", animal_id), ("trial_id", trial_id)):
        if not isinstance(value, str) or not value:
            raise RecordingError(path, f"{name} must be a non-empty string, got {value!r}")
    if len(neural_shape) != 3 or min(neural_shape) < 1:
        raise RecordingError(path, f"neural frames have shape {neural_shape}, expected T x H x W with T, H, W >= 1")
    if np.dtype(neural_dtype) not in NEURAL_DTYPES:
        raise RecordingError(path, f"neural frames have dtype {neural_dtype}, expected uint16 or float32")
    _check_times(path, "neural times", neural_times, neural_shape[0])
    if pose.ndim != 3 or pose.shape[2] != 3 or pose.shape[0] < 1:
        raise RecordingError(path, f"pose has shape {pose.shape}, expected T x J x 3 with T >= 1")
    if len(joint_names) != pose.shape[1]:
        raise RecordingError(path, f"{len(joint_names)} joint names for {pose.shape[1]} pose joints")
    _check_times(path, "pose times", pose_times, pose.shape[0])
    if labels is not None:
        if labels.shape != (pose.shape[0],):
            raise RecordingError(path, f"labels have shape {labels.shape}, expected ({pose.shape[0]},), one per pose frame")
        if not np.issubdtype(labels.dtype, np.integer):
            raise RecordingError(path, f"labels have dtype {labels.dtype}, expected integers (-1 = unlabelled)")
        if not class_names:
            raise RecordingError(path, "labels given without class names")
        if len(labels) and (labels.min() < UNLABELLED or labels.max() >= len(class_names)):
            raise RecordingError(
                path, f"labels range {labels.min()}..{labels.max()} outside -1..{len(class_names) - 1} "
                f"({len(class_names)} classes)"
            )
    return _check_rate(path, "neural_rate_hz", neural_rate_hz), _check_rate(path, "pose_rate_hz", pose_rate_hz)


def open_trial(path: str | os.PathLike[str], *, in_memory: bool = False) -> Trial:
    """Open and validate one trial file.

    Neural frames stay on disk as an h5py dataset (read windows by slicing) unless `in_memory`,
    which reads everything and closes the file. Raises RecordingError naming file and problem.
    """
    p = Path(path)
    if not p.exists():
        raise RecordingError(p, "file does not exist")
    try:
        f = h5py.File(p, "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
    except OSError as exc:
        raise RecordingError(p, f"not a readable HDF5 file ({exc})") from None
    try:
        trial = _read(p, f)
        if in_memory:
            trial.neural = trial.neural[()]
            f.close()
            trial._file = None
        return trial
    except RecordingError:
        f.close()
        raise
    except (KeyError, OSError, RuntimeError, TypeError, ValueError) as exc:  # h5py's view of a corrupt file
        f.close()
        raise RecordingError(p, f"unreadable content ({type(exc).__name__}: {exc})") from None


def _require(path: Path, f: h5py.File, name: str) -> h5py.Dataset:
    obj = f.get(name)
    if obj is None:
        raise RecordingError(path, f"missing dataset '{name}'")
    if not isinstance(obj, h5py.Dataset):
        raise RecordingError(path, f"'{name}' is not a dataset")
    return obj


def _read(p: Path, f: h5py.File) -> Trial:
    version = f.attrs.get("schema_version")
    if version is None:
        raise RecordingError(p, "no 'schema_version' attribute (not an actionloop recording?)")
    if int(version) != SCHEMA_VERSION:
        raise RecordingError(p, f"unknown schema version {int(version)}; this reader understands {SCHEMA_VERSION}")
    for attr in ("animal_id", "trial_id", "neural_rate_hz", "pose_rate_hz"):
        if attr not in f.attrs:
            raise RecordingError(p, f"missing attribute '{attr}'")
    neural = _require(p, f, "neural/frames")
    neural_times = _require(p, f, "neural/times")[()].astype(np.float64)
    pose = _require(p, f, "pose/points3d")[()]
    pose_times = _require(p, f, "pose/times")[()].astype(np.float64)
    joint_names = _decode_names(_require(p, f, "pose/joint_names")[()])
    labels: np.ndarray | None = None
    class_names: list[str] = []
    if "labels" in f:
        labels = _require(p, f, "labels/actions")[()]
        class_names = _decode_names(_require(p, f, "labels/class_names")[()])
    if pose.dtype != np.float32:
        raise RecordingError(p, f"pose has dtype {pose.dtype}, expected float32 (mm)")
    animal_id, trial_id = f.attrs["animal_id"], f.attrs["trial_id"]
    animal_id = animal_id.decode() if isinstance(animal_id, bytes) else animal_id
    trial_id = trial_id.decode() if isinstance(trial_id, bytes) else trial_id
    neural_rate, pose_rate = _validate(
        p,
        animal_id=animal_id,
        trial_id=trial_id,
        neural_shape=tuple(neural.shape),
        neural_dtype=neural.dtype,
        neural_times=neural_times,
        pose=pose,
        pose_times=pose_times,
        joint_names=joint_names,
        labels=labels,
        class_names=class_names,
        neural_rate_hz=f.attrs["neural_rate_hz"],
        pose_rate_hz=f.attrs["pose_rate_hz"],
    )
    extra = json.loads(f.attrs.get("extra_json", "{}"))
    return Trial(
        path=p,
        animal_id=str(animal_id),
        trial_id=str(trial_id),
        neural=neural,
        neural_times=neural_times,
        pose=pose,
        pose_times=pose_times,
        joint_names=joint_names,
        labels=None if labels is None else labels.astype(np.int64),
        class_names=class_names,
        neural_rate_hz=neural_rate,
        pose_rate_hz=pose_rate,
        attrs=extra,
        _file=f,
    )


def write_trial(
    path: str | os.PathLike[str],
    *,
    animal_id: str,
    trial_id: str,
    neural: Any,
    neural_times: np.ndarray,
    pose: np.ndarray,
    pose_times: np.ndarray,
    joint_names: Sequence[str],
    labels: np.ndarray | None = None,
    class_names: Sequence[str] = ACTION_NAMES,
    neural_rate_hz: float | None = None,
    pose_rate_hz: float | None = None,
    extra: Mapping[str, Any] | None = None,
    compression: str | None = None,
    progress: bool = False,
) -> Path:
    """Validate and write one trial atomically (temporary name in the same directory, then rename).

    `neural` is any array-like with shape/dtype and slicing (ndarray, np.memmap, tifffile
    memmap); it is copied CHUNK_FRAMES-sized blocks at a time so large stacks stay out of RAM.
    Rates default to the median timestamp spacing. `extra` is JSON-serialisable provenance.
    Returns the final path. Nothing is left behind on error. `progress` shows a bar over frames.
    """
    p = Path(path)
    if not (hasattr(neural, "shape") and hasattr(neural, "dtype")):
        neural = np.asarray(neural)
    neural_times = np.asarray(neural_times, dtype=np.float64)
    pose = np.asarray(pose)
    if pose.dtype != np.float32:
        if not np.issubdtype(pose.dtype, np.floating):
            raise RecordingError(p, f"pose has dtype {pose.dtype}, expected floating point (mm)")
        pose = pose.astype(np.float32)
    pose_times = np.asarray(pose_times, dtype=np.float64)
    if labels is not None:
        labels = np.asarray(labels)
    neural_shape = tuple(int(s) for s in neural.shape)
    if neural_rate_hz is None:
        neural_rate_hz = _rate_from_times(p, "neural", neural_times)
    if pose_rate_hz is None:
        pose_rate_hz = _rate_from_times(p, "pose", pose_times)
    neural_rate, pose_rate = _validate(
        p,
        animal_id=animal_id,
        trial_id=trial_id,
        neural_shape=neural_shape,
        neural_dtype=np.dtype(neural.dtype),
        neural_times=neural_times,
        pose=pose,
        pose_times=pose_times,
        joint_names=list(joint_names),
        labels=labels,
        class_names=list(class_names),
        neural_rate_hz=neural_rate_hz,
        pose_rate_hz=pose_rate_hz,
    )
    if not np.all(np.isfinite(pose)):
        raise RecordingError(p, "pose contains NaN or infinite coordinates (mark missing joints by interpolation first)")
    extra_json = json.dumps(dict(extra or {}), sort_keys=True)
    if not p.parent.is_dir():
        raise RecordingError(p, "output directory does not exist")
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["animal_id"] = animal_id
            f.attrs["trial_id"] = trial_id
            f.attrs["neural_rate_hz"] = neural_rate
            f.attrs["pose_rate_hz"] = pose_rate
            f.attrs["extra_json"] = extra_json
            t_n, h, w = neural_shape
            ds = f.create_dataset(
                "neural/frames",
                shape=neural_shape,
                dtype=neural.dtype,
                chunks=(min(CHUNK_FRAMES, t_n), h, w),
                compression=compression,
                fletcher32=True,  # per-chunk checksum: a corrupted chunk fails loudly on read
            )
            with tqdm(total=t_n, desc=f"write {p.name}", unit="frame", disable=not progress) as bar:
                for start in range(0, t_n, CHUNK_FRAMES * 8):
                    block = np.asarray(neural[start : start + CHUNK_FRAMES * 8])
                    if block.dtype == np.float32 and not np.all(np.isfinite(block)):
                        raise RecordingError(p, f"neural frames contain NaN or infinite values near frame {start}")
                    ds[start : start + len(block)] = block
                    bar.update(len(block))
            f.create_dataset("neural/times", data=neural_times, chunks=True, fletcher32=True)
            f.create_dataset("pose/points3d", data=pose, chunks=(min(1024, len(pose)), *pose.shape[1:]),
                             fletcher32=True)
            f.create_dataset("pose/times", data=pose_times, chunks=True, fletcher32=True)
            f.create_dataset("pose/joint_names", data=list(joint_names), dtype=_STR)
            if labels is not None:
                f.create_dataset("labels/actions", data=labels.astype(np.int16), chunks=True, fletcher32=True)
                f.create_dataset("labels/class_names", data=list(class_names), dtype=_STR)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


def _rate_from_times(path: Path, name: str, times: np.ndarray) -> float:
    if times.ndim != 1 or len(times) < 2:
        raise RecordingError(path, f"cannot infer the {name} rate from fewer than 2 timestamps; pass it")
    rate = rate_from_times(times)
    if not rate > 0:
        raise RecordingError(path, f"{name} times are not increasing; cannot infer a rate")
    return rate


def rate_from_times(times: np.ndarray) -> float:
    """Frame rate (Hz) of timestamps that may be jittered, rounded or miss frames; 0.0 if not increasing.

    The median interval alone is biased when stamps are rounded (15 Hz stamped to 10 ms gives
    intervals of 60 and 70 ms, median 70 ms: 14.29 Hz). Instead each interval is counted in
    frame periods (a dropped frame is 2), and the period is the least-squares slope of time
    against that frame count over all timestamps, so rounding averages out.
    """
    t = np.asarray(times, dtype=np.float64)
    d = np.diff(t)
    if len(d) == 0 or not np.all(d > 0):
        return 0.0
    regular = d[d < 1.5 * np.median(d)]
    coarse = float(regular.mean()) if len(regular) else float(np.median(d))
    frame = np.concatenate([[0.0], np.cumsum(np.maximum(np.rint(d / coarse), 1.0))])
    slope = float(np.polyfit(frame, t, 1)[0]) if len(t) > 2 else float(d[0])
    return 1.0 / slope if slope > 0 else 0.0
