"""Pose files of the tools labs use -> T x J x 3 points with their joint names, for every importer.

| format      | files                                         | read by   | coordinates                       |
|-------------|-----------------------------------------------|-----------|-----------------------------------|
| `dlc`       | DeepLabCut `.h5` / `.csv` (single or multi-animal) | movement | 2-D image pixels                |
| `sleap`     | SLEAP `.slp` labels or `.h5` analysis file    | movement  | 2-D image pixels                  |
| `anipose`   | Anipose's triangulated `.csv`                 | movement  | 3-D, the calibration board's unit |
| `deepfly3d` | DeepFly3D `pose_result*.pkl` (`points3d`)     | this project (restricted unpickler) | 3-D mm (38 joints) |
| `numpy`     | `.npy`, T x J x 3 (or x 2)                    | NumPy     | as stored; joint names given apart |

`auto` picks the format from the name and, for `.h5` and `.csv`, the content. DeepLabCut,
SLEAP and Anipose go through `movement` (the `pose` extra), one library that reads them all,
instead of a loader per tool here. Joint names are kept as the tool wrote them, in its order.
2-D pose is stored with z = 0 and a warning. Points a tool marked missing (NaN), and with
`min_confidence` those it scored below it, are NaN here: the importers interpolate them over
time. None of these files carry timestamps: the importers take the pose clock from a rate or a
timestamps file.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from trainer.data.importers import ImportAssumptionWarning, read_deepfly3d_pose
from trainer.data.recording import RecordingError
from trainer.data.schema import JOINT_NAMES

POSE_FORMATS = ("auto", "dlc", "sleap", "anipose", "deepfly3d", "numpy")
# movement's name for each tool
_SOFTWARE = {"dlc": "DeepLabCut", "sleap": "SLEAP", "anipose": "Anipose"}


@dataclass(frozen=True)
class PoseFile:
    """What a pose file holds: points T x J x 3 (float32, NaN = missing) and, when the file names
    them, the joint names; `info` is provenance for the trial's `extra`."""

    points: np.ndarray
    joint_names: list[str] | None
    info: dict[str, Any] = field(default_factory=dict)


def detect_format(path: Path) -> str:
    """The pose format of `path` from its name and, for .h5/.csv, its first bytes."""
    suffix = path.suffix.lower()
    if suffix == ".slp":
        return "sleap"
    if suffix == ".pkl":
        return "deepfly3d"
    if suffix == ".npy":
        return "numpy"
    if suffix == ".h5":
        try:
            with h5py.File(path, "r") as f:
                return "sleap" if "tracks" in f else "dlc"  # SLEAP analysis files hold 'tracks'
        except OSError as exc:
            raise RecordingError(path, f"not a readable HDF5 pose file ({exc})") from None
    if suffix == ".csv":
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), [])
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise RecordingError(path, f"not a readable CSV pose file ({type(exc).__name__}: {exc})") from None
        if header and header[0].strip() == "scorer":
            return "dlc"  # DeepLabCut's header rows: scorer, (individuals,) bodyparts, coords
        if any(c.endswith("_x") for c in header) and "fnum" in header:
            return "anipose"
        raise RecordingError(path, f"CSV header {header[:6]} is neither DeepLabCut's ('scorer', 'bodyparts', "
                                   "'coords' rows) nor Anipose's ('<joint>_x', ..., 'fnum'); pass --pose-format")
    raise RecordingError(path, f"cannot tell the pose format from the suffix {suffix!r}; pass --pose-format "
                               f"({', '.join(POSE_FORMATS[1:])})")


def read_pose_file(path: str | os.PathLike[str], fmt: str = "auto", *, individual: str | None = None,
                   min_confidence: float | None = None) -> PoseFile:
    """Read one pose file (module docstring). `individual` picks an animal of a multi-animal file;
    `min_confidence` turns points the tool scored below it into NaN (dlc, sleap, anipose)."""
    p = Path(path)
    if fmt not in POSE_FORMATS:
        raise ValueError(f"pose format must be one of {', '.join(POSE_FORMATS)}, got {fmt!r}")
    if not p.is_file():
        raise RecordingError(p, "pose file does not exist")
    chosen = detect_format(p) if fmt == "auto" else fmt
    if chosen in _SOFTWARE:
        return _read_movement(p, chosen, individual, min_confidence)
    if individual is not None or min_confidence is not None:
        raise RecordingError(p, f"--pose-individual and --pose-min-confidence apply to DeepLabCut, SLEAP and Anipose "
                                f"files, not {chosen}")
    if chosen == "deepfly3d":
        return PoseFile(read_deepfly3d_pose(p), list(JOINT_NAMES), {"pose_format": "deepfly3d"})
    try:
        points = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise RecordingError(p, f"not a readable .npy array ({exc})") from None
    if points.ndim != 3 or points.shape[2] not in (2, 3) or not np.issubdtype(points.dtype, np.floating):
        raise RecordingError(p, f"pose has shape {points.shape} and dtype {points.dtype}; expected T x J x 3 "
                                "(or x 2) floating point")
    return PoseFile(as_3d(p, "pose", np.asarray(points, dtype=np.float32)), None, {"pose_format": "numpy"})


def as_3d(p: Path, what: str, points: np.ndarray) -> np.ndarray:
    """T x J x 2 -> T x J x 3 with z = 0, announced (the recording format is 3-D)."""
    if points.shape[2] == 3:
        return points
    warnings.warn(f"{p}: {what} is 2-D; stored with z = 0", ImportAssumptionWarning, stacklevel=3)
    return _pad_z(points)


def _pad_z(points: np.ndarray) -> np.ndarray:
    """z = 0, NaN where the point is missing (so a missing point stays missing in every coordinate)."""
    z = np.where(np.isnan(points[..., :1]), np.nan, 0.0).astype(points.dtype)
    return np.concatenate([points, z], axis=2)


@contextmanager
def _quiet_movement(p: Path) -> Iterator[Any]:
    """movement.io, with what its import changes globally undone: it sends every Python warning
    to its own logger (the importers announce assumptions as warnings) and logs each error it
    raises to stderr before raising it (the importers report errors once, naming the file)."""
    shown = warnings.showwarning
    try:
        import movement.io
        from movement.utils.logging import logger
    except ImportError:
        raise RecordingError(p, "reading DeepLabCut, SLEAP or Anipose files needs movement: install the pose "
                                "extra (pip install -e '.[pose]')") from None
    finally:
        warnings.showwarning = shown
    logger.remove()
    yield movement.io


def _dim(ds: Any, *names: str) -> str:
    # movement 0.16 renamed the dimensions from plural to singular (keypoints -> keypoint)
    return next(n for n in names if n in ds.dims)


def _read_movement(p: Path, fmt: str, individual: str | None, min_confidence: float | None) -> PoseFile:
    with _quiet_movement(p) as mio:
        try:
            ds = mio.load_dataset(p, source_software=_SOFTWARE[fmt])
        except Exception as exc:  # movement's validators raise ValueError, OSError, KeyError, ... by file type
            raise RecordingError(p, f"not a readable {_SOFTWARE[fmt]} pose file ({type(exc).__name__}: "
                                    f"{str(exc)[:300]})") from None
    kp, ind = _dim(ds, "keypoint", "keypoints"), _dim(ds, "individual", "individuals")
    animals = [str(a) for a in ds.coords[ind].values]
    if individual is not None:
        if individual not in animals:
            raise RecordingError(p, f"no individual {individual!r}; the file has: {', '.join(animals)}")
        chosen = individual
    elif len(animals) > 1:
        raise RecordingError(p, f"{len(animals)} individuals ({', '.join(animals)}); one trial is one animal: choose "
                                "one with --pose-individual NAME")
    else:
        chosen = animals[0]
    sel = {ind: chosen}
    points = ds["position"].sel(sel).transpose("time", kp, "space").values.astype(np.float32)
    joints = [str(k) for k in ds.coords[kp].values]
    if fmt == "anipose":  # movement sorts Anipose's joints by name; keep the file's order
        order = _anipose_order(p, joints)
        points, joints = points[:, order], [joints[i] for i in order]
    dropped = 0
    if min_confidence is not None:
        confidence = ds["confidence"].sel(sel).transpose("time", kp).values
        if fmt == "anipose":
            confidence = confidence[:, order]
        low = ~(confidence >= min_confidence) & np.isfinite(points).all(axis=2)  # NaN confidence counts as low
        points[low] = np.nan
        dropped = int(low.sum())
    missing = int((~np.isfinite(points).all(axis=2)).sum())
    # Neither unit is mm; pose normalisation divides each animal by its own scale, so training
    # does not depend on it, but the stored numbers are not millimetres.
    text = ("Anipose pose is in the unit of its calibration board; stored as is (the recording format expects mm)"
            if fmt == "anipose" else f"{_SOFTWARE[fmt]} pose is 2-D, in image pixels; stored with z = 0 and in "
            "pixels (the recording format expects 3-D mm)")
    warnings.warn(f"{p}: {text}",
                  ImportAssumptionWarning, stacklevel=3)
    if points.shape[2] == 2:
        points = _pad_z(points)
    return PoseFile(points, joints, {"pose_format": fmt, "pose_individual": chosen,
                                     "pose_dimensions": int(ds.sizes["space"]), "pose_missing_points": missing,
                                     "pose_min_confidence": min_confidence, "pose_below_confidence": dropped})


def _anipose_order(p: Path, joints: list[str]) -> list[int]:
    with open(p, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), [])
    in_file = [c[: -len("_x")] for c in header if c.endswith("_x")]
    return sorted(range(len(joints)), key=lambda i: in_file.index(joints[i]) if joints[i] in in_file else len(in_file))
