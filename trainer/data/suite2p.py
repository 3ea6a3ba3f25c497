"""suite2p in: the registered (motion-corrected) movie of one plane -> one trial file.

suite2p writes, per plane folder (`<save_path0>/suite2p/plane<N>/`):

- `data.bin`: the registered movie, raw int16, frames x Ly x Lx, C order, no header
  (`data_chan2.bin`: the second channel). suite2p itself counts frames from the file size.
- suite2p >= 1.0: `db.npy` (recording: `Ly`, `Lx`, `nframes`, paths) and `settings.npy`
  (pipeline settings: `fs`, the sampling rate per plane), both dicts saved with `np.save`.
- suite2p < 1.0 (and 1.x with `save_ops_orig`): `ops.npy`, one dict with `Ly`, `Lx`, `nframes`
  and `fs`. When both layouts are present, `db.npy` + `settings.npy` are read.

These `.npy` files are pickles (a NumPy object array holding a dict; `np.load` needs
`allow_pickle=True`, which would run any code a crafted file names). They are read here with a
restricted unpickler that accepts only NumPy arrays and scalars, plain containers and dates;
anything else is refused, not executed.

int16 frames become float32 (exact, negative values kept), the pixel rule every importer and
bridge shares (protocols/pixels.py). The movie stays in `data.bin` (memory-mapped) and is
converted a block at a time. The neural clock is `fs` from `--neural-start` (suite2p keeps no
timestamps), or frame timestamps given with `--neural-times`, checked against `fs`. Pose and
labels come from the same options as `import numpy` (trainer/data/importers.py).
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Unpack

import numpy as np

from trainer.data.importers import (
    RATE_TOLERANCE,
    SAFE_PICKLE_GLOBALS,
    ArrayOptions,
    ImportAssumptionWarning,
    SafeUnpickler,
    import_arrays,
    load_npy,
    pose_into_arrays,
    trial_destination,
)
from trainer.data.recording import RecordingError, rate_from_times

# suite2p's settings carry the processing date (datetime with a timezone) beside arrays and numbers.
_SUITE2P_GLOBALS = frozenset(SAFE_PICKLE_GLOBALS | {("datetime", "datetime"), ("datetime", "timezone"),
                                                   ("datetime", "timedelta"), ("datetime", "date")})
# suite2p's default `fs`: a file holding exactly this rate may never have been told the real one.
SUITE2P_DEFAULT_FS = 10.0
_MOVIES = {1: "data.bin", 2: "data_chan2.bin"}


def read_suite2p_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The dict in a suite2p `ops.npy` / `db.npy` / `settings.npy`, unpickled with a restricted
    unpickler (module docstring) instead of `np.load(allow_pickle=True)`."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                _, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version}")
            if dtype != np.dtype(object):
                raise RecordingError(p, f"holds a {dtype} array, not the pickled dict suite2p saves")
            array = SafeUnpickler(f, _SUITE2P_GLOBALS).load()
    except RecordingError:
        raise
    except (pickle.UnpicklingError, ValueError, EOFError, OSError, AttributeError, TypeError, IndexError) as exc:
        raise RecordingError(p, f"not a readable suite2p .npy dict ({type(exc).__name__}: {exc})") from None
    value = array.item() if isinstance(array, np.ndarray) and array.size == 1 else array
    if not isinstance(value, dict):
        raise RecordingError(p, f"holds {type(value).__name__}, not the dict suite2p saves")
    return value


def plane_folder(folder: str | os.PathLike[str], plane: int | None = None) -> Path:
    """The plane folder meant by `folder`: a plane folder itself, a `suite2p` output folder of
    plane folders, or the folder that holds `suite2p/`."""
    f = Path(folder)
    if not f.is_dir():
        raise RecordingError(f, "suite2p folder does not exist")
    if (f / "suite2p").is_dir() and not (f / "data.bin").exists():
        f = f / "suite2p"
    planes = sorted((p for p in f.glob("plane*") if re.fullmatch(r"plane\d+", p.name) and p.is_dir()),
                    key=lambda p: int(p.name[5:]))
    if not planes:
        if plane is not None and f.name != f"plane{plane}":
            raise RecordingError(f, f"--plane {plane} given but this is one plane folder ({f.name})")
        return f
    if plane is None:
        if len(planes) > 1:
            raise RecordingError(f, f"{len(planes)} planes ({', '.join(p.name for p in planes)}); choose one with "
                                    "--plane N")
        return planes[0]
    chosen = f / f"plane{plane}"
    if not chosen.is_dir():
        raise RecordingError(f, f"no plane{plane}; the folder has {', '.join(p.name for p in planes)}")
    return chosen


def read_suite2p_plane(folder: Path, channel: int = 1) -> tuple[np.memmap, float, dict[str, Any]]:
    """(registered movie memory-mapped as frames x Ly x Lx int16, fs, provenance) of one plane folder."""
    if channel not in _MOVIES:
        raise ValueError(f"channel must be 1 or 2, got {channel}")
    if (folder / "db.npy").is_file() and (folder / "settings.npy").is_file():
        db, settings = read_suite2p_dict(folder / "db.npy"), read_suite2p_dict(folder / "settings.npy")
        meta, layout = {**settings, **db}, "db.npy + settings.npy"
        where = {"Ly": folder / "db.npy", "Lx": folder / "db.npy", "nframes": folder / "db.npy",
                 "fs": folder / "settings.npy"}
    elif (folder / "ops.npy").is_file():
        meta, layout = read_suite2p_dict(folder / "ops.npy"), "ops.npy"
        where = dict.fromkeys(("Ly", "Lx", "nframes", "fs"), folder / "ops.npy")
    else:
        found = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise RecordingError(folder, f"no suite2p settings: expected db.npy and settings.npy (suite2p >= 1.0) or "
                                     f"ops.npy (older) in the plane folder (it holds {found})")
    for key in ("Ly", "Lx", "fs"):
        if key not in meta:
            raise RecordingError(where[key], f"no '{key}' (it holds {', '.join(sorted(map(str, meta))[:30])})")
    ly, lx, fs = meta["Ly"], meta["Lx"], meta["fs"]
    for key, value in (("Ly", ly), ("Lx", lx)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise RecordingError(where[key], f"'{key}' is {value!r}, expected a positive number of pixels")
    if isinstance(fs, bool) or not isinstance(fs, (int, float, np.number)) or not np.isfinite(fs) or not fs > 0:
        raise RecordingError(where["fs"], f"'fs' is {fs!r}, expected the positive frame rate per plane in Hz")
    movie = folder / _MOVIES[channel]
    if not movie.is_file():
        raise RecordingError(movie, "registered movie does not exist" + (
            " (the plane has no second channel?)" if channel == 2 else " (was registration run, or the binary "
                                                                       "deleted with delete_bin?)"))
    frame_bytes = 2 * int(ly) * int(lx)
    size = movie.stat().st_size
    if size == 0 or size % frame_bytes:
        raise RecordingError(movie, f"{size} bytes is not a whole number of {int(ly)} x {int(lx)} int16 frames "
                                    f"({frame_bytes} bytes each; Ly and Lx from {layout}): truncated, or not this "
                                    "plane's movie")
    n = size // frame_bytes
    nframes = meta.get("nframes", n)
    if isinstance(nframes, bool) or not isinstance(nframes, (int, np.integer)):
        raise RecordingError(where["nframes"], f"'nframes' is {nframes!r}, expected a number of frames")
    if nframes != n:
        raise RecordingError(movie, f"holds {n} frames of {int(ly)} x {int(lx)} but 'nframes' in {layout} says "
                                    f"{int(nframes)}: truncated or overwritten")
    frames = np.memmap(movie, dtype=np.int16, mode="r", shape=(n, int(ly), int(lx)))
    info = {"suite2p_layout": layout, "suite2p_plane": folder.name, "suite2p_movie": movie.name,
            "suite2p_fs": float(fs), "suite2p_version": str(meta.get("version", meta.get("suite2p_version", "")))}
    return frames, float(fs), info


def import_suite2p(folder: str | os.PathLike[str], out: str | os.PathLike[str], *, animal_id: str, trial_id: str,
                   pose: str | os.PathLike[str], plane: int | None = None, channel: int = 1,
                   pose_format: str = "auto", pose_individual: str | None = None,
                   pose_min_confidence: float | None = None, overwrite: bool = False, progress: bool = False,
                   **options: Unpack[ArrayOptions]) -> Path:
    """One suite2p plane's registered movie + a pose file (+ labels) -> one trial file.

    The neural rate is `fs` from the settings unless `neural_rate_hz` replaces it (suite2p's
    default of 10 Hz is announced: it is often left unset); with `neural_times` it is checked
    against them. Everything else as `import_numpy` with a separate pose file."""
    path = trial_destination(out, animal_id, trial_id, overwrite)
    plane_dir = plane_folder(folder, plane)
    frames, fs, info = read_suite2p_plane(plane_dir, channel)
    neural_times = options.get("neural_times")
    if options.get("neural_rate_hz") is None and neural_times is not None:
        _check_fs(plane_dir, info["suite2p_layout"], fs, neural_times)  # the timestamps' own rate is stored
        rate_from = "--neural-times"
    elif options.get("neural_rate_hz") is None:
        options["neural_rate_hz"] = fs
        rate_from = "fs"
        if fs == SUITE2P_DEFAULT_FS:
            warnings.warn(f"{plane_dir}: fs is {fs:g} Hz, suite2p's default: if the rate was never set when suite2p "
                          "ran, pass the real one (--neural-rate HZ) or the frame times (--neural-times)",
                          ImportAssumptionWarning, stacklevel=2)
    else:
        rate_from = "--neural-rate"
    arrays: dict[str, Any] = {"neural": frames}
    extra = {"source": "suite2p", "file": plane_dir.name, **info, "neural_rate_from": rate_from,
             **pose_into_arrays(arrays, pose, pose_format, pose_individual, pose_min_confidence)}
    missing = {"neural": "", "pose": "pass --pose-times FILE.npy"}
    return import_arrays(path, plane_dir / info["suite2p_movie"], arrays, animal_id=animal_id, trial_id=trial_id,
                         missing=missing, pose_source=Path(pose), extra=extra, progress=progress, **options)


def _check_fs(plane_dir: Path, layout: str, fs: float, neural_times: str | os.PathLike[str]) -> None:
    """suite2p's fs must agree with recorded frame times (a wrong fs is usually a default left unset)."""
    times = np.asarray(load_npy(neural_times, "neural times"), dtype=np.float64)
    if times.ndim != 1 or len(times) < 2:
        return  # import_arrays says what is wrong with them
    measured = rate_from_times(times)
    if measured > 0 and abs(measured - fs) / fs > RATE_TOLERANCE:
        raise RecordingError(plane_dir, f"fs {fs:g} Hz in {layout} disagrees with the frame times in {neural_times} "
                                        f"({measured:.4f} Hz; tolerance {100 * RATE_TOLERANCE:g} %): if fs was never "
                                        f"set when suite2p ran, pass --neural-rate {measured:.4g}; else check which "
                                        "file is which")
