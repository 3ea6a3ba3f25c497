"""Import what labs have into the recording format.

- 2-photon TIFF stack (tifffile) + DeepFly3D `pose_result` pickle (`points3d`, T x 38 x 3)
  or another pose file + optional labels CSV;
- plain NumPy: one `.npz` with named arrays, or separate `.npy` files and a pose file.

Pose files of DeepLabCut, SLEAP and Anipose are read by trainer/data/pose_files.py; the pieces
the array importers share (`import_arrays`, `pose_with_clock`) serve suite2p (suite2p.py) and
NWB (nwb.py) too.

Every importer validates first and writes through `write_trial` (temporary name, then rename),
so a bad or interrupted import never leaves a half file.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np

from protocols.pixels import PixelTypeError, recording_dtype, recording_pixels
from trainer.data.recording import RecordingError, rate_from_times, write_trial
from trainer.data.schema import ACTION_NAMES, JOINT_NAMES, UNLABELLED

# What a DeepFly3D pose_result pickle may contain: plain containers and NumPy arrays. Anything
# else (a pickle can name any callable) is refused instead of executed.
SAFE_PICKLE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"), ("collections", "OrderedDict"), ("builtins", "slice"),
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickles only the globals in `allowed` (default: NumPy arrays and plain containers)."""

    def __init__(self, file: Any, allowed: frozenset[tuple[str, str]] | set[tuple[str, str]] = SAFE_PICKLE_GLOBALS) -> None:
        super().__init__(file)
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.allowed:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only NumPy arrays and containers are allowed)")


def fill_missing_joints(path: Path, points: np.ndarray,
                        joint_names: Sequence[str] = JOINT_NAMES) -> tuple[np.ndarray, int]:
    """Linearly interpolate NaN coordinates over time, per joint; returns (filled, n filled)."""
    bad = ~np.isfinite(points)
    if not bad.any():
        return points, 0
    out = points.copy()
    t = np.arange(len(points))
    flat = out.reshape(len(points), -1)
    for col in np.flatnonzero(bad.reshape(len(points), -1).any(axis=0)):
        ok = np.isfinite(flat[:, col])
        if not ok.any():
            joint = joint_names[col // 3] if col // 3 < len(joint_names) else str(col // 3)
            raise RecordingError(path, f"joint {joint} has no finite coordinate in any frame")
        flat[:, col] = np.interp(t, t[ok], flat[ok, col])
    return out, int(bad.any(axis=2).sum())


def read_deepfly3d_pose(path: str | os.PathLike[str]) -> np.ndarray:
    """`points3d` (T x 38 x 3 float32, mm) from a DeepFly3D `pose_result*.pkl`; NaN joints interpolated."""
    p = Path(path)
    if not p.is_file():
        raise RecordingError(p, "pose file does not exist")
    try:
        with open(p, "rb") as f:
            data = SafeUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError) as exc:
        raise RecordingError(p, f"not a readable DeepFly3D pose pickle ({exc})") from None
    if not isinstance(data, dict) or "points3d" not in data:
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise RecordingError(p, f"no 'points3d' in the pose pickle (found {keys})")
    points = np.asarray(data["points3d"])
    if points.ndim != 3 or points.shape[1:] != (len(JOINT_NAMES), 3):
        raise RecordingError(p, f"points3d has shape {points.shape}, expected T x {len(JOINT_NAMES)} x 3")
    if not np.issubdtype(points.dtype, np.floating):
        raise RecordingError(p, f"points3d has dtype {points.dtype}, expected floating point")
    points, _ = fill_missing_joints(p, points.astype(np.float32))
    return points


def read_labels_csv(path: str | os.PathLike[str], n_frames: int,
                    class_names: Sequence[str] = ACTION_NAMES) -> np.ndarray:
    """Per-pose-frame labels (n_frames,) int64 from a CSV with a header, either

    - per frame: columns `frame,label` (also `action`/`behaviour`), or
    - bouts: columns `start,stop,label` (pose frame indices, stop exclusive).

    A label is a class name or its integer index. Frames not listed are -1 (unlabelled).
    """
    p = Path(path)
    if not p.is_file():
        raise RecordingError(p, "labels file does not exist")
    text = p.read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows:
        raise RecordingError(p, "labels CSV is empty")
    header = [c.strip().lower() for c in rows[0]]
    label_col = next((header.index(k) for k in ("label", "action", "behaviour", "behavior") if k in header), None)
    if label_col is None:
        raise RecordingError(p, f"labels CSV header {rows[0]} has no 'label' column")
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.full(n_frames, UNLABELLED, dtype=np.int64)

    def parse_label(value: str, line: int) -> int:
        v = value.strip()
        if v in index:
            return index[v]
        if v in ("", "-1", "unlabelled", "unlabeled", "none"):
            return UNLABELLED
        try:
            i = int(v)
        except ValueError:
            raise RecordingError(p, f"line {line}: unknown class {v!r}; known: {', '.join(class_names)}") from None
        if not 0 <= i < len(class_names):
            raise RecordingError(p, f"line {line}: class index {i} outside 0..{len(class_names) - 1}")
        return i

    def parse_frame(value: str, line: int, name: str, upper: int) -> int:
        try:
            i = int(value)
        except ValueError:
            raise RecordingError(p, f"line {line}: {name} {value!r} is not an integer frame index") from None
        if not 0 <= i <= upper:
            raise RecordingError(p, f"line {line}: {name} {i} outside 0..{upper} (the pose has {n_frames} frames)")
        return i

    if "start" in header and "stop" in header:
        s_col, e_col = header.index("start"), header.index("stop")
        for line, row in enumerate(rows[1:], start=2):
            if len(row) <= max(s_col, e_col, label_col):
                raise RecordingError(p, f"line {line}: expected {len(header)} columns, got {len(row)}")
            start = parse_frame(row[s_col], line, "start", n_frames - 1)
            stop = parse_frame(row[e_col], line, "stop", n_frames)
            if stop <= start:
                raise RecordingError(p, f"line {line}: stop {stop} is not after start {start}")
            labels[start:stop] = parse_label(row[label_col], line)
    elif "frame" in header:
        f_col = header.index("frame")
        for line, row in enumerate(rows[1:], start=2):
            if len(row) <= max(f_col, label_col):
                raise RecordingError(p, f"line {line}: expected {len(header)} columns, got {len(row)}")
            labels[parse_frame(row[f_col], line, "frame", n_frames - 1)] = parse_label(row[label_col], line)
    else:
        raise RecordingError(p, f"labels CSV header {rows[0]} needs 'frame,label' or 'start,stop,label'")
    return labels


def read_tiff_stack(path: str | os.PathLike[str], channel: int | None = None) -> np.ndarray:
    """Frames (T x H x W) of a multi-page TIFF, memory-mapped when the file allows; uint16 or float32.

    A T x C x H x W stack (interleaved channels, as ScanImage writes them) needs `channel`.
    """
    import tifffile

    p = Path(path)
    if not p.is_file():
        raise RecordingError(p, "TIFF file does not exist")
    try:
        frames = tifffile.memmap(p, mode="r")  # uncompressed and contiguous: no copy into RAM
    except Exception:  # compressed, tiled, or broken: the full reader decides and explains
        try:
            frames = tifffile.imread(p)
        except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as exc:
            raise RecordingError(p, f"not a readable TIFF stack ({type(exc).__name__}: {exc})") from None
    if frames.size == 0:
        raise RecordingError(p, "TIFF holds no image data (empty or corrupt file)")
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim == 4 and channel is not None:
        if not 0 <= channel < frames.shape[1]:
            raise RecordingError(p, f"channel {channel} outside 0..{frames.shape[1] - 1} "
                                    f"(stack of shape {frames.shape}, frames x channels x height x width)")
        frames = frames[:, channel]
    elif channel is not None:
        raise RecordingError(p, f"channel {channel} given but the stack has shape {frames.shape} (no channel axis)")
    if frames.ndim != 3:
        hint = "; pick one with channel=/--channel" if frames.ndim == 4 else ""
        raise RecordingError(p, f"TIFF holds an array of shape {frames.shape}; expected frames x height x width "
                                f"(one plane){hint}")
    return _neural_dtype(p, frames)


def _neural_dtype(p: Path, frames: np.ndarray) -> np.ndarray:
    # the same mapping as the live bridges (protocols/pixels.py), so training sees live values
    try:
        return recording_pixels(frames)
    except PixelTypeError as exc:
        raise RecordingError(p, f"neural frames: {exc}") from None


def _times(n: int, rate_hz: float | None, start_s: float, what: str, p: Path) -> np.ndarray:
    if rate_hz is None or not rate_hz > 0:
        raise RecordingError(p, f"{what} rate is required (a positive number of Hz) when no timestamps are given")
    return start_s + np.arange(n) / rate_hz


def trial_destination(out: str | os.PathLike[str], animal_id: str, trial_id: str, overwrite: bool) -> Path:
    o = Path(out)
    path = o / f"{animal_id}_{trial_id}.h5" if o.is_dir() else o
    if path.suffix != ".h5":
        raise RecordingError(path, "output must be a directory or a *.h5 path")
    if path.exists() and not overwrite:
        raise RecordingError(path, "already exists (pass overwrite=True / --force to replace it)")
    return path


def import_tiff_deepfly3d(
    tiff: str | os.PathLike[str],
    pose_pickle: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    animal_id: str,
    trial_id: str,
    neural_rate_hz: float,
    pose_rate_hz: float,
    labels_csv: str | os.PathLike[str] | None = None,
    neural_start_s: float = 0.0,
    pose_start_s: float = 0.0,
    class_names: Sequence[str] = ACTION_NAMES,
    channel: int | None = None,
    pose_format: str = "auto",
    pose_individual: str | None = None,
    pose_min_confidence: float | None = None,
    joint_names: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """TIFF stack + pose (DeepFly3D pickle, or any `trainer.data.pose_files` format) (+ labels
    CSV) -> one trial file. Timestamps come from the rates and start offsets (the microscope and
    the cameras keep separate clocks)."""
    path = trial_destination(out, animal_id, trial_id, overwrite)
    frames = read_tiff_stack(tiff, channel)
    pp = Path(pose_pickle)
    pose, pose_times, _, joints, pose_info = pose_with_clock(
        pp, pose_format=pose_format, pose_individual=pose_individual, pose_min_confidence=pose_min_confidence,
        joint_names=joint_names, pose_rate_hz=pose_rate_hz, pose_start_s=pose_start_s)
    labels = read_labels_csv(labels_csv, len(pose), class_names) if labels_csv is not None else None
    return write_trial(
        path, animal_id=animal_id, trial_id=trial_id, neural=frames,
        neural_times=_times(len(frames), neural_rate_hz, neural_start_s, "neural", Path(tiff)),
        pose=pose, pose_times=pose_times, joint_names=joints, labels=labels, class_names=class_names,
        neural_rate_hz=neural_rate_hz, pose_rate_hz=pose_rate_hz,
        extra={"source": "tiff+deepfly3d" if pose_info["pose_format"] == "deepfly3d" else "tiff",
               "tiff": Path(tiff).name, "labels": Path(labels_csv).name if labels_csv else None,
               "channel": channel, **pose_info},
        progress=progress,
    )


def load_npy(path: str | os.PathLike[str], what: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise RecordingError(p, f"{what} file does not exist")
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise RecordingError(p, f"not a readable .npy array ({exc})") from None


# Keys of a .npz that `import_numpy` reads timestamps from (seconds, one per frame), in order of
# preference; the first is what this project writes. Errors list them.
NEURAL_TIME_KEYS = ("neural_times", "neural_t", "neural_timestamps")
POSE_TIME_KEYS = ("pose_times", "pose_t", "pose_timestamps")
# A stated rate may differ from the one the timestamps show by this fraction (0.5 %: stamps
# rounded to 10 ms at 15 Hz over a few seconds estimate within 0.1 %).
RATE_TOLERANCE = 0.005


class ImportAssumptionWarning(UserWarning):
    """An importer filled in something the input did not say (the DeepFly3D joint layout, a unit)."""


def _clock(source: Path, what: str, n: int, times: np.ndarray | None, origin: str, rate_hz: float | None,
           start_s: float | None, missing: str) -> tuple[np.ndarray, float, str]:
    """(timestamps, rate, where they came from): recorded timestamps win; a stated rate is checked against them."""
    if times is None:
        if rate_hz is None:
            raise RecordingError(source, f"no {what} timestamps: {missing}; or pass the {what} rate "
                                         f"(--{what}-rate HZ, with --{what}-start S) for a clock of that rate")
        start = start_s or 0.0
        return (_times(n, rate_hz, start, what, source), float(rate_hz),
                f"{rate_hz} Hz from {start:g} s (no timestamps)")
    if start_s is not None:
        raise RecordingError(source, f"--{what}-start given, but the {what} timestamps in {origin} say when each "
                                     "frame was; leave it out")
    times = np.asarray(times)
    if times.ndim != 1 or len(times) != n or not np.issubdtype(times.dtype, np.number):
        raise RecordingError(source, f"{origin} has shape {times.shape} and dtype {times.dtype}; expected "
                                     f"{n} numbers ({what} timestamps in seconds, one per frame)")
    times = times.astype(np.float64)
    if n < 2:
        if rate_hz is None:
            raise RecordingError(source, f"{origin} holds one timestamp; pass --{what}-rate HZ")
        return times, float(rate_hz), origin
    if not np.all(np.isfinite(times)) or not np.all(np.diff(times) > 0):
        raise RecordingError(source, f"{origin} is not strictly increasing finite seconds")
    measured = rate_from_times(times)
    if rate_hz is not None:
        if not rate_hz > 0:
            raise RecordingError(source, f"{what} rate {rate_hz} is not a positive number of Hz")
        off = abs(measured - rate_hz) / rate_hz
        if off > RATE_TOLERANCE:
            raise RecordingError(source, f"--{what}-rate {rate_hz:g} Hz disagrees with the timestamps in {origin} "
                                         f"({measured:.4f} Hz, {100 * off:.1f} % off; tolerance "
                                         f"{100 * RATE_TOLERANCE:g} %): leave the rate out to use the "
                                         "timestamps, or check which file is which")
        return times, float(rate_hz), origin
    return times, measured, origin


def _one_of(source: Path, arrays: dict[str, Any], keys: Sequence[str]) -> tuple[np.ndarray | None, str | None]:
    present = [k for k in keys if k in arrays]
    if len(present) > 1:
        raise RecordingError(source, f"holds both {' and '.join(repr(k) for k in present)}; keep one")
    return (arrays[present[0]], present[0]) if present else (None, None)


def _names(source: Path, given: Sequence[str] | None, arrays: dict[str, Any], key: str, flag: str) -> list[str] | None:
    """Names given to the importer and/or stored in the file under `key`; they must agree."""
    stored = ([v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(arrays[key]).ravel().tolist()]
              if key in arrays else None)
    given = list(given) if given is not None else None
    if given is not None and stored is not None and given != stored:
        raise RecordingError(source, f"'{key}' in the file {stored} differ from {flag} {given}")
    return given if given is not None else stored


def _joint_names(source: Path, names: list[str] | None, n_joints: int) -> list[str]:
    if names is not None:
        if len(names) != n_joints:
            raise RecordingError(source, f"pose has {n_joints} joints but {len(names)} joint names {names}")
        return names
    if n_joints != len(JOINT_NAMES):
        raise RecordingError(source, f"pose has {n_joints} joints and no joint names; without names the "
                                     f"DeepFly3D layout ({len(JOINT_NAMES)} joints) is assumed, which does not "
                                     "fit: store 'joint_names' in the npz or pass --joint-names a,b,... or "
                                     "--joint-names joints.json")
    warnings.warn(f"{source}: no joint names given; assuming the DeepFly3D layout ({len(JOINT_NAMES)} joints, "
                  f"{JOINT_NAMES[0]} ... {JOINT_NAMES[-1]}); pass --joint-names to say otherwise",
                  ImportAssumptionWarning, stacklevel=3)
    return list(JOINT_NAMES)


def _no_class_names(source: Path, what: str) -> RecordingError:
    # Never file labels under names they did not have (the project's fly actions are one choice).
    return RecordingError(source, f"{what} but no class names: store 'class_names' in the npz, or pass "
                                  "--class-names a,b,... or --class-names names.json (--class-names default "
                                  f"for the project's {len(ACTION_NAMES)} fly actions: {', '.join(ACTION_NAMES)})")


def _class_names(source: Path, names: list[str] | None, labels: np.ndarray | None) -> list[str]:
    if labels is None:
        return names or []
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise RecordingError(source, f"labels have dtype {labels.dtype}, expected integers (-1 = unlabelled)")
    span = f"{labels.min()}..{labels.max()}" if labels.size else "empty"
    if names is None:
        raise _no_class_names(source, f"labels ({span})")
    if labels.size and (labels.min() < UNLABELLED or labels.max() >= len(names)):
        raise RecordingError(source, f"labels run {span} but {len(names)} class names {names} cover "
                                     f"0..{len(names) - 1} (-1 = unlabelled)")
    return names


def _pose_names(pose_file: Any) -> dict[str, Any]:
    return {"joint_names": pose_file.joint_names} if pose_file.joint_names is not None else {}


class PixelBlocks:
    """A frames x H x W array-like (np.memmap, h5py dataset) seen in the recording dtype
    (protocols/pixels.py), converted one block at a time as write_trial copies it, so an int16
    movie larger than RAM is never converted whole."""

    def __init__(self, source: Path, frames: Any) -> None:
        try:
            self.dtype = recording_dtype(frames.dtype)
        except PixelTypeError as exc:
            raise RecordingError(source, f"neural frames: {exc}") from None
        self.frames = frames
        self.shape = tuple(int(s) for s in frames.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        return np.asarray(self.frames[key]).astype(self.dtype, copy=False)


def import_numpy(
    out: str | os.PathLike[str],
    *,
    animal_id: str,
    trial_id: str,
    npz: str | os.PathLike[str] | None = None,
    neural: str | os.PathLike[str] | None = None,
    pose: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    neural_times: str | os.PathLike[str] | None = None,
    pose_times: str | os.PathLike[str] | None = None,
    neural_rate_hz: float | None = None,
    pose_rate_hz: float | None = None,
    neural_start_s: float | None = None,
    pose_start_s: float | None = None,
    class_names: Sequence[str] | None = None,
    joint_names: Sequence[str] | None = None,
    pose_format: str = "auto",
    pose_individual: str | None = None,
    pose_min_confidence: float | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """NumPy arrays -> one trial file.

    Either `npz` (keys: `neural`, `pose`; optional timestamps under NEURAL_TIME_KEYS and
    POSE_TIME_KEYS, `labels`, `joint_names`, `class_names`) or a separate `neural` .npy and a
    `pose` file: a T x J x 3 .npy or any `trainer.data.pose_files` format (DeepLabCut, SLEAP,
    Anipose, DeepFly3D; `pose_format`, `pose_individual`, `pose_min_confidence`), with optional
    `labels` (.npy of ints or a labels CSV) and `neural_times`/`pose_times` .npy.

    Recorded timestamps are always used; a rate given as well must agree with them within
    RATE_TOLERANCE; a rate alone makes a clock from `*_start_s` (default 0 s). Labels need class names (from the file
    or `class_names`, which must agree). Without joint names the DeepFly3D layout is assumed
    with an ImportAssumptionWarning, and only for 38 joints.
    """
    path = trial_destination(out, animal_id, trial_id, overwrite)
    arrays: dict[str, Any] = {}
    source: Path
    extra: dict[str, Any] = {"source": "numpy"}
    if npz is not None:
        if neural is not None or pose is not None:
            raise ValueError("give either npz or neural/pose .npy files, not both")
        source = Path(npz)
        if not source.is_file():
            raise RecordingError(source, "npz file does not exist")
        try:
            with np.load(source, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError) as exc:
            raise RecordingError(source, f"not a readable .npz archive ({exc})") from None
        for key in ("neural", "pose"):
            if key not in arrays:
                raise RecordingError(source, f"missing array '{key}' (found {sorted(arrays)})")
        missing = {what: f"looked for {', '.join(keys)} in the file (it holds {', '.join(sorted(arrays))})"
                   for what, keys in (("neural", NEURAL_TIME_KEYS), ("pose", POSE_TIME_KEYS))}
    else:
        if neural is None or pose is None:
            raise ValueError("give npz, or both neural and pose .npy files")
        source = Path(neural)
        arrays["neural"] = load_npy(neural, "neural")
        extra.update(pose_into_arrays(arrays, pose, pose_format, pose_individual, pose_min_confidence))
        missing = {what: f"pass --{what}-times FILE.npy" for what in ("neural", "pose")}
    extra["file"] = source.name
    return import_arrays(path, source, arrays, animal_id=animal_id, trial_id=trial_id, missing=missing,
                         labels=labels, neural_times=neural_times, pose_times=pose_times,
                         neural_rate_hz=neural_rate_hz, pose_rate_hz=pose_rate_hz, neural_start_s=neural_start_s,
                         pose_start_s=pose_start_s, class_names=class_names, joint_names=joint_names,
                         pose_source=None if pose is None else Path(pose), extra=extra, progress=progress)


def pose_into_arrays(arrays: dict[str, Any], pose: str | os.PathLike[str], fmt: str, individual: str | None,
                     min_confidence: float | None) -> dict[str, Any]:
    """Pose (and joint names, when the file has them) from a pose file into `arrays`; returns provenance."""
    from trainer.data.pose_files import read_pose_file

    pose_file = read_pose_file(pose, fmt, individual=individual, min_confidence=min_confidence)
    arrays["pose"] = pose_file.points
    arrays.update(_pose_names(pose_file))
    return {"pose": Path(pose).name, **pose_file.info}


def pose_with_clock(pose: str | os.PathLike[str], *, pose_format: str = "auto", pose_individual: str | None = None,
                    pose_min_confidence: float | None = None, joint_names: Sequence[str] | None = None,
                    pose_times: str | os.PathLike[str] | None = None, pose_rate_hz: float | None = None,
                    pose_start_s: float | None = None,
                    missing: str = "pass --pose-times FILE.npy") -> tuple[np.ndarray, np.ndarray, float, list[str],
                                                                          dict[str, Any]]:
    """A pose file on its own clock, for importers whose neural frames come from elsewhere (TIFF,
    NWB): (points T x J x 3 with missing points interpolated, timestamps, rate, joint names,
    provenance). The clock follows import_numpy's rules; `missing` says where timestamps could come from."""
    pp = Path(pose)
    arrays: dict[str, Any] = {}
    info = pose_into_arrays(arrays, pp, pose_format, pose_individual, pose_min_confidence)
    points = arrays["pose"]
    joints = _joint_names(pp, _names(pp, joint_names, arrays, "joint_names", "--joint-names"), points.shape[1])
    stamps = None if pose_times is None else np.asarray(load_npy(pose_times, "pose times"))
    times, rate, origin = _clock(pp, "pose", len(points), stamps, str(pose_times), pose_rate_hz, pose_start_s, missing)
    points, _ = fill_missing_joints(pp, points, joints)
    return points, times, rate, joints, {**info, "pose_times": origin}


class ArrayOptions(TypedDict, total=False):
    """The clock, label and name options every array importer takes (as import_numpy documents them)."""

    labels: str | os.PathLike[str] | None
    neural_times: str | os.PathLike[str] | None
    pose_times: str | os.PathLike[str] | None
    neural_rate_hz: float | None
    pose_rate_hz: float | None
    neural_start_s: float | None
    pose_start_s: float | None
    class_names: Sequence[str] | None
    joint_names: Sequence[str] | None


def import_arrays(path: Path, source: Path, arrays: dict[str, Any], *, animal_id: str, trial_id: str,
                  missing: dict[str, str], pose_source: Path | None = None, extra: dict[str, Any] | None = None,
                  progress: bool = False, **options: Unpack[ArrayOptions]) -> Path:
    """What every array importer shares (numpy, suite2p): `arrays` holds `neural` (array-like,
    T x H x W), `pose` (T x J x 3) and optionally timestamps, `labels`, `joint_names`,
    `class_names` under import_numpy's keys; clocks, names and labels are checked and combined
    with the options as import_numpy documents, then written atomically to `path`. `missing`
    says, per clock, where timestamps were looked for (for the error without them); errors about
    the pose name `pose_source` (default `source`)."""
    labels, joint_names, class_names = options.get("labels"), options.get("joint_names"), options.get("class_names")
    if labels is not None and "labels" in arrays:
        raise RecordingError(source, f"holds 'labels' and --labels {labels} was given too; keep one")
    frames = arrays["neural"]
    if len(frames.shape) != 3:
        raise RecordingError(source, f"neural has shape {frames.shape}, expected frames x height x width")
    frames = PixelBlocks(source, frames)
    points = np.asarray(arrays["pose"])
    if points.ndim != 3 or points.shape[2] != 3:
        raise RecordingError(source, f"pose has shape {points.shape}, expected T x J x 3")
    clocks = []
    o = options
    for what, keys, n, file, rate, start in (
            ("neural", NEURAL_TIME_KEYS, len(frames), o.get("neural_times"), o.get("neural_rate_hz"),
             o.get("neural_start_s")),
            ("pose", POSE_TIME_KEYS, len(points), o.get("pose_times"), o.get("pose_rate_hz"), o.get("pose_start_s"))):
        stamps, key = _one_of(source, arrays, keys)
        if file is not None:
            if stamps is not None:
                raise RecordingError(source, f"holds {what} timestamps '{key}' and --{what}-times {file} was given too; "
                                             "keep one")
            stamps, origin = np.asarray(load_npy(file, f"{what} times")), str(file)
        else:
            origin = f"'{key}'"
        clocks.append(_clock(source, what, n, stamps, origin, rate, start, missing[what]))
    (n_times, n_rate, n_origin), (p_times, p_rate, p_origin) = clocks
    ps = pose_source or source
    joints = _joint_names(ps, _names(ps, joint_names, arrays, "joint_names", "--joint-names"), points.shape[1])
    names = _names(source, class_names, arrays, "class_names", "--class-names")
    lab: np.ndarray | None = arrays.get("labels")
    if labels is not None:
        lp = Path(labels)
        if lp.suffix.lower() == ".csv":
            if names is None:
                raise _no_class_names(lp, "labels CSV")
            lab = read_labels_csv(lp, len(points), names)
        else:
            lab = np.asarray(load_npy(lp, "labels"))
    names = _class_names(source, names, lab)
    if np.issubdtype(points.dtype, np.floating):
        points, _ = fill_missing_joints(ps, points.astype(np.float32), joints)
    return write_trial(
        path, animal_id=animal_id, trial_id=trial_id, neural=frames, neural_times=n_times,
        pose=points, pose_times=p_times, joint_names=joints, labels=lab, class_names=names,
        neural_rate_hz=n_rate, pose_rate_hz=p_rate,
        extra={**(extra or {}), "neural_times": n_origin, "pose_times": p_origin},
        progress=progress,
    )
