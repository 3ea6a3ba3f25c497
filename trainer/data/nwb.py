"""NWB in: one NWB file (one session of one animal) -> one trial file, through pynwb.

What is read from where:

- neural frames: a `TwoPhotonSeries` (or `OnePhotonSeries`; a plain `ImageSeries` when there is
  neither), chosen by its name or its imaging plane's name when there are several. NWB stores
  images as (frame, x, y[, z]); the recording format is frames x rows x columns, so x and y are
  swapped (`frame_axes="yx"` for writers that stored rows first). Timestamps, else
  `starting_time` + `rate`. Frames stay in the HDF5 file and are copied a block at a time.
- pose: an ndx-pose `PoseEstimation` (or `MultiCameraPoseEstimation`): one
  `PoseEstimationSeries` per joint, all on one clock; joints in the skeleton's order, names kept
  as given. 2-D pose gets z = 0. Units are converted to mm where the unit says how.
- labels (optional): a `TimeIntervals` table with `start_time`, `stop_time` and a label column
  (`label`, `labels`, `action`, `behavior` or `behaviour`, or one named), holding class names or
  integer indices; or a `BehavioralEpochs` of one `IntervalSeries` per action, named after it
  (> 0 opens an interval, < 0 closes it). Every pose frame with start <= t < stop gets the
  interval's label.

All NWB times share the session's clock, so neural, pose and label times are kept as recorded.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from protocols.pixels import PixelTypeError, recording_dtype
from trainer.data.importers import ImportAssumptionWarning, fill_missing_joints, pose_with_clock, trial_destination
from trainer.data.pose_files import as_3d
from trainer.data.recording import RecordingError, rate_from_times, write_trial
from trainer.data.schema import UNLABELLED

IMAGING_TYPES = ("TwoPhotonSeries", "OnePhotonSeries")
POSE_TYPES = ("MultiCameraPoseEstimation", "PoseEstimation")
LABEL_COLUMNS = ("label", "labels", "action", "behavior", "behaviour")
# Pose units the importer converts to mm; any other (pixels, a.u.) is kept as is, with a warning.
_MM_PER_UNIT = {
    "mm": 1.0, "millimeter": 1.0, "millimeters": 1.0, "millimetre": 1.0, "millimetres": 1.0,
    "m": 1000.0, "meter": 1000.0, "meters": 1000.0, "metre": 1000.0, "metres": 1000.0,
    "cm": 10.0, "centimeter": 10.0, "centimeters": 10.0,
    "um": 1e-3, "µm": 1e-3, "micrometer": 1e-3, "micrometers": 1e-3, "micron": 1e-3, "microns": 1e-3,
}
_UNLABELLED_NAMES = ("", "-1", "unlabelled", "unlabeled", "none")


def import_nwb(
    nwb_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    animal_id: str | None = None,
    trial_id: str | None = None,
    imaging: str | None = None,
    pose: str | None = None,
    labels: str | None = None,
    label_column: str | None = None,
    class_names: Sequence[str] | None = None,
    frame_axes: str = "xy",
    z_plane: int | None = None,
    pose_file: str | os.PathLike[str] | None = None,
    pose_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """One NWB file -> one trial file (`out`: a dataset directory or a .h5 path).

    `animal_id` defaults to the file's subject_id, `trial_id` to its session_id (else the file
    name). `imaging`/`pose`/`labels` name the series, pose container and TimeIntervals table
    when the file has several. `pose_file` takes the pose from a pose tool's file instead of
    ndx-pose (`trainer.data.importers.pose_with_clock`, with `pose_options`; its clock must be the
    session's). Raises RecordingError naming the file and the problem; nothing is written on error.
    """
    p = Path(nwb_path)
    if frame_axes not in ("xy", "yx"):
        raise ValueError(f"frame_axes must be 'xy' (NWB's frame, x, y) or 'yx', got {frame_axes!r}")
    with _read(p) as nwb:
        objects = list(nwb.objects.values())
        animal = animal_id or _subject_id(nwb)
        if not animal:
            raise RecordingError(p, "no subject_id in the file's Subject; pass the animal id (--animal)")
        trial = trial_id or getattr(nwb, "session_id", None) or p.stem
        dest = trial_destination(out, animal, str(trial), overwrite)
        # A two-photon (or one-photon) series if there is one: other ImageSeries are often camera videos.
        types = IMAGING_TYPES if imaging is None and _any(objects, IMAGING_TYPES) else (*IMAGING_TYPES, "ImageSeries")
        series = _choose(p, objects, types, imaging, "imaging series")
        if series is None:
            raise RecordingError(p, f"no imaging data: no {', '.join(IMAGING_TYPES)} or ImageSeries in the file "
                                    f"(it holds {_inventory(objects)})")
        frames = _Frames(p, series, frame_axes, z_plane)
        neural_times, neural_rate = _series_clock(p, series, frames.shape[0], f"{series.name!r}")
        if pose_file is not None:
            if pose is not None:
                raise ValueError("--pose names a PoseEstimation in the NWB file, --pose-file a pose file: give one")
            points, pose_times, pose_rate, joints, pose_info = pose_with_clock(
                pose_file, missing="pass --pose-times FILE.npy or --pose-rate HZ (on the NWB file's session clock)",
                **(pose_options or {}))
        else:
            container = _choose(p, objects, POSE_TYPES, pose, "pose estimation",
                                exclude_children_of="MultiCameraPoseEstimation")
            if container is None:
                raise RecordingError(p, "no pose: no ndx-pose PoseEstimation in the file (the trainer learns from "
                                        f"pose; it holds {_inventory(objects)}); or give a pose file (--pose-file)")
            points, pose_times, joints, pose_info = _pose(p, container)
            pose_rate = rate_from_times(pose_times) if len(pose_times) > 1 else None
        source = _label_source(p, objects, labels, label_column)
        lab, names, label_info = (None, [], {"labels": None}) if source is None else _labels(
            p, source, label_column, class_names, pose_times)
        return write_trial(
            dest, animal_id=animal, trial_id=str(trial), neural=frames, neural_times=neural_times,
            pose=points, pose_times=pose_times, joint_names=joints, labels=lab, class_names=names,
            neural_rate_hz=neural_rate, pose_rate_hz=pose_rate,
            extra={"source": "nwb", "file": p.name, "imaging": series.name, "frame_axes": frame_axes,
                   "z_plane": z_plane, "neural_dtype_in_file": str(frames.source_dtype), **pose_info, **label_info},
            progress=progress,
        )


def label_names(nwb_path: str | os.PathLike[str], *, labels: str | None = None,
                label_column: str | None = None) -> list[str]:
    """The class names a file's labels use, sorted (empty without labels or for integer labels):
    for one class order across the files of a dataset."""
    p = Path(nwb_path)
    with _read(p) as nwb:
        source = _label_source(p, list(nwb.objects.values()), labels, label_column)
        if source is None:
            return []
        raw = [v.decode() if isinstance(v, bytes) else v for v in _label_rows(p, source, label_column)[2]]
    text = (v.strip() for v in raw if isinstance(v, str))
    return sorted({t for t in text if t.lower() not in _UNLABELLED_NAMES})


@contextmanager
def _read(p: Path) -> Iterator[Any]:
    """The NWBFile of `p`, open (datasets read lazily) until the block ends."""
    if not p.is_file():
        raise RecordingError(p, "NWB file does not exist")
    pynwb = _pynwb(p)
    try:
        io = pynwb.NWBHDF5IO(str(p), "r")
    except Exception as exc:  # h5py and hdmf raise many types for a file that is not NWB
        raise RecordingError(p, f"not a readable NWB file ({type(exc).__name__}: {exc})") from None
    with io:
        try:
            nwb = io.read()
        except Exception as exc:  # pynwb validates on read (e.g. one timestamp per frame)
            raise RecordingError(p, f"not a readable NWB file ({_reason(exc)})") from None
        yield nwb


def _reason(exc: Exception) -> str:
    """hdmf's construct errors carry a dump of the whole group; keep the sentence that says why."""
    text = str(exc)
    at = text.find("Could not construct")
    if at >= 0:
        text = text[at:].rstrip("\"')")
    return f"{type(exc).__name__}: {text[:400]}"


def _pynwb(p: Path) -> Any:
    try:
        import pynwb
    except ImportError:
        raise RecordingError(p, "reading NWB needs pynwb: install the nwb extra (pip install -e '.[nwb]')") from None
    try:  # registers ndx-pose's classes; files carry their extension's spec, so reading works without it too
        import ndx_pose  # noqa: F401
    except ImportError:
        pass
    return pynwb


def _subject_id(nwb: Any) -> str | None:
    subject = getattr(nwb, "subject", None)
    return getattr(subject, "subject_id", None) if subject is not None else None


def _type(obj: Any) -> str:
    return str(getattr(obj, "neurodata_type", type(obj).__name__))


def _any(objects: list[Any], types: Sequence[str]) -> bool:
    return any(_type(o) in types for o in objects)


def _inventory(objects: list[Any]) -> str:
    named = sorted({f"{_type(o)} {o.name!r}" for o in objects if hasattr(o, "neurodata_type")
                    and _type(o) not in ("VectorData", "VectorIndex", "ElementIdentifiers", "NWBFile")})
    return ", ".join(named) or "nothing readable"


def _choose(p: Path, objects: list[Any], types: Sequence[str], name: str | None, what: str,
            exclude_children_of: str | None = None) -> Any | None:
    """The one object of `types` (named `name`, or the only one); None if there is none."""
    found = [o for o in objects if _type(o) in types
             and not (exclude_children_of and _type(getattr(o, "parent", None)) == exclude_children_of)]
    if name is not None:
        plane = [o for o in found if getattr(getattr(o, "imaging_plane", None), "name", None) == name]
        match = [o for o in found if o.name == name] or plane
        if not match:
            known = ", ".join(sorted(f"{o.name!r}" + (f" (plane {o.imaging_plane.name!r})"
                                                      if getattr(o, "imaging_plane", None) is not None else "")
                                     for o in found)) or "none"
            raise RecordingError(p, f"no {what} named {name!r}; the file has: {known}")
        if len(match) > 1:
            raise RecordingError(p, f"{len(match)} candidates for the {what} match {name!r} "
                                    f"({', '.join(o.name for o in match)}); name the series itself")
        return match[0]
    if len(found) > 1:
        flag = {"imaging series": "--imaging", "pose estimation": "--pose"}.get(what, "")
        raise RecordingError(p, f"{len(found)} candidates for the {what} "
                                f"({', '.join(sorted(repr(o.name) for o in found))}); choose one by name ({flag} NAME)")
    return found[0] if found else None


def _series_clock(p: Path, series: Any, n: int, what: str) -> tuple[np.ndarray, float | None]:
    """(timestamps, rate) of a TimeSeries: recorded timestamps, else starting_time + rate."""
    stamps = getattr(series, "timestamps", None)
    if stamps is not None:
        times = np.asarray(stamps[()] if hasattr(stamps, "shape") else stamps, dtype=np.float64)
        if times.ndim != 1 or len(times) != n:
            raise RecordingError(p, f"{what} has {n} samples but {times.size} timestamps")
        if n > 1 and not np.all(np.diff(times) > 0):
            bad = int(np.argmax(~(np.diff(times) > 0))) + 1
            raise RecordingError(p, f"{what} timestamps are not strictly increasing (at sample {bad})")
        return times, (rate_from_times(times) if n > 1 else None)
    rate = getattr(series, "rate", None)
    if rate is None or not rate > 0:
        raise RecordingError(p, f"{what} has neither timestamps nor a positive rate")
    start = float(getattr(series, "starting_time", None) or 0.0)
    return start + np.arange(n) / float(rate), float(rate)


class _Frames:
    """An NWB image series as frames x rows x columns, read one block at a time (write_trial
    slices it in 64-frame blocks), so the movie never sits in RAM whole."""

    def __init__(self, p: Path, series: Any, frame_axes: str, z_plane: int | None) -> None:
        data = getattr(series, "data", None)
        if data is None or not int(np.prod(getattr(data, "shape", np.shape(data)))):
            external = getattr(series, "external_file", None)
            if external is not None:
                raise RecordingError(p, f"{series.name!r} keeps its frames in external files "
                                        f"({', '.join(map(str, external[:]))}); import those with "
                                        "`actionloop import tiff` instead")
            raise RecordingError(p, f"{series.name!r} holds no frames")
        self.data = data
        shape = tuple(int(s) for s in self.data.shape)
        if len(shape) == 4:
            if z_plane is None:
                raise RecordingError(p, f"{series.name!r} is volumetric {shape} (frame, x, y, z); choose a plane "
                                        "with --z INDEX")
            if not 0 <= z_plane < shape[3]:
                raise RecordingError(p, f"--z {z_plane} outside 0..{shape[3] - 1} for {series.name!r} {shape}")
        elif z_plane is not None:
            raise RecordingError(p, f"--z given but {series.name!r} has shape {shape} (no z axis)")
        if len(shape) not in (3, 4):
            raise RecordingError(p, f"{series.name!r} has shape {shape}; expected (frame, x, y) images")
        self.z = z_plane
        self.transpose = frame_axes == "xy"
        self.source_dtype = np.dtype(self.data.dtype)
        self.dtype = _target_dtype(p, series.name, self.source_dtype)
        t, a, b = shape[:3]
        self.shape = (t, b, a) if self.transpose else (t, a, b)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        block = np.asarray(self.data[key] if self.z is None else self.data[key, :, :, self.z])
        if self.transpose:
            block = block.transpose(0, 2, 1)
        return np.ascontiguousarray(block, dtype=self.dtype)


def _target_dtype(p: Path, name: str, dtype: np.dtype) -> np.dtype:
    """The recording dtype for an NWB image dtype: the rule every importer and bridge shares
    (protocols/pixels.py; suite2p's int16 becomes float32, which holds it exactly)."""
    try:
        return recording_dtype(dtype)
    except PixelTypeError as exc:
        raise RecordingError(p, f"{name!r}: {exc}") from None


def _pose(p: Path, container: Any) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, Any]]:
    all_series = dict(container.pose_estimation_series)
    if not all_series:
        raise RecordingError(p, f"pose estimation {container.name!r} holds no PoseEstimationSeries")
    skeleton = getattr(container, "skeleton", None)
    nodes = [str(n) for n in skeleton.nodes[:]] if skeleton is not None else []
    # The skeleton gives the joint order; series it does not list follow in the file's order.
    order = [n for n in nodes if n in all_series] + [n for n in all_series if n not in nodes]
    first = all_series[order[0]]
    times, _ = _series_clock(p, first, len(first.data), f"pose series {order[0]!r}")
    columns, units, dims = [], set(), set()
    for joint in order:
        s = all_series[joint]
        data = np.asarray(s.data[()], dtype=np.float64)
        if data.ndim != 2 or data.shape[1] not in (2, 3):
            raise RecordingError(p, f"pose series {joint!r} has shape {data.shape}; expected samples x 2 or 3")
        if len(data) != len(times):
            raise RecordingError(p, f"pose series {joint!r} has {len(data)} samples but {order[0]!r} has "
                                    f"{len(times)}; every joint must share one clock")
        if s is not first:
            t, _ = _series_clock(p, s, len(data), f"pose series {joint!r}")
            if not np.allclose(t, times, rtol=0, atol=1e-6):
                worst = float(np.max(np.abs(t - times)))
                raise RecordingError(p, f"pose series {joint!r} timestamps differ from {order[0]!r}'s by up to "
                                        f"{worst:.4g} s; every joint must share one clock")
        columns.append(data * float(getattr(s, "conversion", 1.0) or 1.0) + float(getattr(s, "offset", 0.0) or 0.0))
        units.add(str(getattr(s, "unit", "") or ""))
        dims.add(data.shape[1])
    if len(dims) > 1:
        raise RecordingError(p, f"pose series of {container.name!r} mix 2-D and 3-D positions")
    if len(units) > 1:
        raise RecordingError(p, f"pose series of {container.name!r} use different units {sorted(units)}")
    unit = units.pop()
    points = np.stack(columns, axis=1)  # T x J x (2|3)
    points = as_3d(p, f"pose {container.name!r}", points)
    scale = _MM_PER_UNIT.get(unit.strip().lower())
    if scale is None:
        warnings.warn(f"{p}: pose unit {unit!r} is not a length the importer knows; stored as is (the recording "
                      "format expects mm)", ImportAssumptionWarning, stacklevel=3)
    points, _ = fill_missing_joints(p, (points * (scale or 1.0)).astype(np.float32), order)
    return points, times, order, {"pose": container.name, "pose_unit_in_file": unit, "pose_dimensions": int(dims.pop())}


def _label_source(p: Path, objects: list[Any], name: str | None, column: str | None) -> Any | None:
    """The TimeIntervals table (with a label column) or BehavioralEpochs holding the labels, or None."""
    tables = [o for o in objects if _type(o) == "TimeIntervals"]
    epochs = [o for o in objects if _type(o) == "BehavioralEpochs"]
    if name is not None:
        match = [t for t in tables + epochs if t.name == name]
        if not match:
            known = ", ".join(f"{_type(t)} {t.name!r}" for t in tables + epochs) or "none"
            raise RecordingError(p, f"no TimeIntervals table or BehavioralEpochs named {name!r}; the file has: {known}")
        return match[0]
    wanted = (column,) if column else LABEL_COLUMNS
    found = [t for t in tables if any(c in t.colnames for c in wanted)] + [e for e in epochs if e.interval_series]
    if len(found) > 1:
        raise RecordingError(p, f"{len(found)} label sources ({', '.join(f'{_type(t)} {t.name!r}' for t in found)}); "
                                "choose one (--labels NAME)")
    return found[0] if found else None


def _label_rows(p: Path, source: Any, column: str | None) -> tuple[np.ndarray, np.ndarray, list[Any], str, str]:
    """(start, stop, label per row, where, column) of a TimeIntervals table or a BehavioralEpochs."""
    if _type(source) == "BehavioralEpochs":
        return _epoch_rows(p, source)
    where = f"table {source.name!r}"
    cols = list(source.colnames)
    for needed in ("start_time", "stop_time"):
        if needed not in cols:
            raise RecordingError(p, f"{where} has no {needed} column (columns: {', '.join(cols)})")
    col = column or next((c for c in LABEL_COLUMNS if c in cols), None)
    if col is None or col not in cols:
        raise RecordingError(p, f"{where} has no label column {column or ' / '.join(LABEL_COLUMNS)} "
                                f"(columns: {', '.join(cols)}); name it (--label-column NAME)")
    start = np.asarray(source["start_time"][:], dtype=np.float64)
    stop = np.asarray(source["stop_time"][:], dtype=np.float64)
    return start, stop, list(source[col][:]), where, f"column {col!r}"


def _epoch_rows(p: Path, epochs: Any) -> tuple[np.ndarray, np.ndarray, list[Any], str, str]:
    """One IntervalSeries per action, named after it: data > 0 opens an interval, < 0 closes it."""
    where = f"BehavioralEpochs {epochs.name!r}"
    start: list[float] = []
    stop: list[float] = []
    names: list[str] = []
    for name, series in epochs.interval_series.items():
        data = np.asarray(series.data[()])
        times, _ = _series_clock(p, series, len(data), f"IntervalSeries {name!r}")
        opened: float | None = None
        for value, t in zip(data, times):
            if value > 0 and opened is None:
                opened = float(t)
            elif value < 0 and opened is not None:
                start.append(opened)
                stop.append(float(t))
                names.append(name)
                opened = None
            elif value != 0:
                raise RecordingError(p, f"IntervalSeries {name!r} of {where}: at {t:g} s an interval "
                                        f"{'starts again before it ended' if value > 0 else 'ends that never started'}")
        if opened is not None:
            raise RecordingError(p, f"IntervalSeries {name!r} of {where}: the interval from {opened:g} s never ends")
    return np.asarray(start), np.asarray(stop), names, where, "(IntervalSeries names)"


def _labels(p: Path, source: Any, column: str | None, class_names: Sequence[str] | None,
            pose_times: np.ndarray) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    start, stop, raw, where, col = _label_rows(p, source, column)
    values, names = _label_values(p, f"{where} {col}", raw, class_names)
    bad = np.flatnonzero(~(stop > start))
    if len(bad):
        raise RecordingError(p, f"{where} row {bad[0]}: stop_time {stop[bad[0]]:g} is not after start_time "
                                f"{start[bad[0]]:g}")
    order = np.argsort(start, kind="stable")
    reach = int(order[0]) if len(order) else -1  # the row reaching furthest so far
    for b in order[1:]:
        a = reach
        if start[b] < stop[a] and values[a] != values[b]:
            raise RecordingError(p, f"{where} rows {a} and {b} overlap ({start[b]:g}-{min(stop[a], stop[b]):g} s) "
                                    "with different labels")
        reach = int(b) if stop[b] > stop[a] else a
    labels = np.full(len(pose_times), UNLABELLED, dtype=np.int64)
    lo = np.searchsorted(pose_times, start, side="left")
    hi = np.searchsorted(pose_times, stop, side="left")
    for i in order:
        labels[lo[i]:hi[i]] = values[i]
    if len(start) and not (hi > lo).any():
        raise RecordingError(p, f"no interval of {where} ({start.min():g}-{stop.max():g} s) covers a pose sample "
                                f"({pose_times[0]:g}-{pose_times[-1]:g} s): are they on the session clock?")
    return labels, names, {"labels": f"{_type(source)} {source.name}", "label_column": col}


def _label_values(p: Path, where: str, raw: list[Any],
                  class_names: Sequence[str] | None) -> tuple[list[int], list[str]]:
    """Each row's class index, and the class names (given, or the table's own names sorted)."""
    decoded = [v.decode() if isinstance(v, bytes) else v for v in raw]
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in decoded):
        if class_names is None:
            raise RecordingError(p, f"{where} holds class indices but no class names are given: pass "
                                    "--class-names a,b,... or --class-names names.json")
        ints = [int(v) for v in decoded]
        bad = sorted({i for i in ints if not UNLABELLED <= i < len(class_names)})
        if bad:
            raise RecordingError(p, f"{where} holds class indices {bad} outside "
                                    f"0..{len(class_names) - 1} ({len(class_names)} class names)")
        return ints, list(class_names)
    text = [str(v).strip() for v in decoded]
    if class_names is None:
        names = sorted({t for t in text if t.lower() not in _UNLABELLED_NAMES})
        warnings.warn(f"{p}: class names taken from {where} in sorted order ({', '.join(names)}); pass "
                      "--class-names to keep one order across files that lack some classes",
                      ImportAssumptionWarning, stacklevel=4)
    else:
        names = list(class_names)
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({t for t in text if t not in index and t.lower() not in _UNLABELLED_NAMES})
    if unknown:
        rows = [i for i, t in enumerate(text) if t in unknown][:5]
        raise RecordingError(p, f"{where} has unknown label names {unknown} (rows "
                                f"{', '.join(map(str, rows))}); class names: {', '.join(names)}")
    return [index.get(t, UNLABELLED) for t in text], names
