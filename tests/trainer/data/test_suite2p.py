"""`import suite2p`: plane folders written as suite2p writes them (data.bin: raw int16 frames;
ops.npy of suite2p < 1.0, db.npy + settings.npy of 1.x, each a dict saved with np.save) import
exactly, int16 as float32; broken or crafted folders fail naming the file and the fix."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tools.cli import main
from trainer.data.importers import ImportAssumptionWarning
from trainer.data.recording import RecordingError, open_trial
from trainer.data.suite2p import import_suite2p, read_suite2p_dict

JOINTS = ["RF_ThC", "RF_Claw", "LF_ThC", "LF_Claw"]


def write_plane(plane: Path, movie: np.ndarray, fs: float, layout: str = "1.x", **meta: Any) -> Path:
    """A suite2p plane folder: the registered movie as suite2p's BinaryFile writes it (int16,
    frames x Ly x Lx, no header) and the settings as run_s2p saves them (dicts through np.save)."""
    plane.mkdir(parents=True, exist_ok=True)
    movie.astype(np.int16).tofile(plane / "data.bin")
    n, ly, lx = movie.shape
    db = {"Ly": ly, "Lx": lx, "nframes": n, "nplanes": 1, "nchannels": 1, "save_path": str(plane),
          "reg_file": "/data/elsewhere/suite2p/plane0/data.bin", "file_list": ["/data/file_00001.tif"],
          "meanImg": movie.mean(axis=0).astype(np.float32)}
    settings = {"fs": fs, "tau": 1.0, "diameter": [12.0, 12.0], "torch_device": "cpu", "version": "1.1.0",
                "run": {"do_registration": 1}, "io": {"save_ops_orig": True, "delete_bin": False},
                "date_proc": datetime.datetime.now().astimezone()}
    if layout == "1.x":
        np.save(plane / "db.npy", {**db, **meta})
        np.save(plane / "settings.npy", settings)
    else:  # suite2p < 1.0: one ops dict
        ops = {**db, **settings, "yoff": np.zeros(n, np.float32), "xoff": np.zeros(n, np.float32),
               "badframes": np.zeros(n, bool), "corrXY": np.ones(n, np.float32), "suite2p_version": "0.14.6",
               "refImg": movie[0].astype(np.int16), "date_proc": datetime.datetime.now(), "fs": np.float64(fs)}
        ops.pop("version")
        np.save(plane / "ops.npy", {**ops, **meta})
    return plane


def _movie(n: int = 40, shape: tuple[int, int] = (12, 10), seed: int = 0) -> np.ndarray:
    # int16 as registration leaves it: negative samples around the PMT offset included
    return np.random.default_rng(seed).integers(-200, 6000, (n, *shape)).astype(np.int16)


def _pose(tmp_path: Path, n: int = 150) -> tuple[Path, np.ndarray]:
    points = np.random.default_rng(1).normal(0, 1, (n, len(JOINTS), 3)).astype(np.float32)
    np.save(tmp_path / "pose.npy", points)
    return tmp_path / "pose.npy", points


@pytest.mark.parametrize("layout", ["1.x", "0.x"])
def test_suite2p_round_trip(tmp_path: Path, layout: str) -> None:
    movie = _movie()
    plane = write_plane(tmp_path / "suite2p" / "plane0", movie, fs=15.0, layout=layout)
    pose, points = _pose(tmp_path)
    np.save(tmp_path / "labels.npy", np.repeat([0, 1, -1], 50))
    out = tmp_path / "ds"
    out.mkdir()
    path = import_suite2p(tmp_path, out, animal_id="m3", trial_id="d1", pose=pose, pose_rate_hz=50.0,
                          neural_start_s=0.01, labels=tmp_path / "labels.npy", class_names=["walk", "rest"],
                          joint_names=JOINTS)
    assert path == out / "m3_d1.h5"
    with open_trial(path) as t:
        assert t.frame_dtype == np.float32
        np.testing.assert_array_equal(t.neural[()], movie.astype(np.float32))  # exact, negatives kept
        np.testing.assert_allclose(t.neural_times, 0.01 + np.arange(40) / 15.0)
        assert t.neural_rate_hz == 15.0 and t.pose_rate_hz == 50.0
        np.testing.assert_array_equal(t.pose, points)
        np.testing.assert_array_equal(t.labels, np.repeat([0, 1, -1], 50))
        assert t.joint_names == JOINTS and t.class_names == ["walk", "rest"]
        assert t.attrs["source"] == "suite2p" and t.attrs["suite2p_plane"] == "plane0"
        assert t.attrs["suite2p_layout"] == ("db.npy + settings.npy" if layout == "1.x" else "ops.npy")
    assert plane.is_dir()


def test_cli_imports_a_plane_with_frame_times(tmp_path: Path) -> None:
    movie = _movie(n=30)
    write_plane(tmp_path / "s2p" / "suite2p" / "plane0", movie, fs=30.0)
    write_plane(tmp_path / "s2p" / "suite2p" / "plane1", movie[:, ::-1], fs=30.0)
    pose, _ = _pose(tmp_path, n=100)
    times = 2.0 + np.round(np.arange(30) / 30.0, 2)  # stamped to 10 ms
    np.save(tmp_path / "frame_t.npy", times)
    argv = ["import", "suite2p", str(tmp_path / "s2p"), "--pose", str(pose), "--pose-rate", "100",
            "--joint-names", ",".join(JOINTS), "--neural-times", str(tmp_path / "frame_t.npy"),
            "--animal", "m1", "--trial", "t0", "--out", str(tmp_path)]
    assert main(argv) == 1  # two planes: which one?
    assert main([*argv, "--plane", "1"]) == 0
    with open_trial(tmp_path / "m1_t0.h5") as t:
        np.testing.assert_array_equal(t.neural[()], movie[:, ::-1].astype(np.float32))
        np.testing.assert_array_equal(t.neural_times, times)  # recorded times kept
        assert t.neural_rate_hz == pytest.approx(30.0, rel=1e-3)
        assert t.attrs["suite2p_plane"] == "plane1" and t.attrs["neural_rate_from"] == "--neural-times"


def test_suite2p_default_rate_is_announced_and_replaceable(tmp_path: Path) -> None:
    write_plane(tmp_path / "plane0", _movie(n=20), fs=10.0)
    pose, _ = _pose(tmp_path, n=60)
    with pytest.warns(ImportAssumptionWarning, match="fs is 10 Hz, suite2p's default"):
        import_suite2p(tmp_path / "plane0", tmp_path, animal_id="a", trial_id="t", pose=pose, pose_rate_hz=50.0,
                       joint_names=JOINTS)
    path = import_suite2p(tmp_path / "plane0", tmp_path, animal_id="a", trial_id="t2", pose=pose, pose_rate_hz=50.0,
                          joint_names=JOINTS, neural_rate_hz=7.5)
    with open_trial(path) as t:
        assert t.neural_rate_hz == 7.5 and t.attrs["neural_rate_from"] == "--neural-rate"
    np.save(tmp_path / "t.npy", np.arange(20) / 30.0)
    with pytest.raises(RecordingError, match=r"fs 10 Hz in db.npy \+ settings.npy disagrees with the frame times .* "
                                             r"pass --neural-rate 30"):
        import_suite2p(tmp_path / "plane0", tmp_path, animal_id="a", trial_id="t3", pose=pose, pose_rate_hz=50.0,
                       joint_names=JOINTS, neural_times=tmp_path / "t.npy")


class _Payload:
    """What a crafted settings file could hold: unpickling it would run a command."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch PWNED",))


def _corrupt(what: str, plane: Path) -> None:
    if what == "no settings":
        (plane / "db.npy").unlink()
        (plane / "settings.npy").unlink()
    elif what == "truncated movie":
        with open(plane / "data.bin", "r+b") as f:
            f.truncate(plane.joinpath("data.bin").stat().st_size - 3)
    elif what == "frames missing":
        with open(plane / "data.bin", "r+b") as f:
            f.truncate(2 * 12 * 10 * 25)
    elif what == "no movie":
        (plane / "data.bin").unlink()
    elif what == "no fs":
        np.save(plane / "settings.npy", {"tau": 1.0})
    elif what == "bad Ly":
        np.save(plane / "db.npy", {"Ly": "12", "Lx": 10, "nframes": 40})
    elif what == "crafted pickle":
        np.save(plane / "settings.npy", {"fs": 15.0, "x": _Payload()})
    elif what == "not a dict":
        np.save(plane / "settings.npy", np.zeros(3))
    elif what == "not npy":
        (plane / "db.npy").write_bytes(b"garbage")


@pytest.mark.parametrize("what, file, message", [
    ("no settings", "plane0", "no suite2p settings: expected db.npy and settings.npy .* or ops.npy"),
    ("truncated movie", "data.bin", "is not a whole number of 12 x 10 int16 frames"),
    ("frames missing", "data.bin", "holds 25 frames of 12 x 10 but 'nframes' in db.npy \\+ settings.npy says 40"),
    ("no movie", "data.bin", "registered movie does not exist"),
    ("no fs", "settings.npy", "no 'fs'"),
    ("bad Ly", "db.npy", "'Ly' is '12', expected a positive number of pixels"),
    ("crafted pickle", "settings.npy", "refusing to load posix.system"),
    ("not a dict", "settings.npy", "holds a float64 array, not the pickled dict suite2p saves"),
    ("not npy", "db.npy", "not a readable suite2p .npy dict"),
])
def test_broken_suite2p_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str, file: str,
                                message: str) -> None:
    plane = write_plane(tmp_path / "plane0", _movie(), fs=15.0)
    _corrupt(what, plane)
    pose, _ = _pose(tmp_path)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "ds"
    out.mkdir()
    with pytest.raises(RecordingError, match=message) as err:
        import_suite2p(plane, out, animal_id="a", trial_id="t", pose=pose, pose_rate_hz=50.0, joint_names=JOINTS)
    assert err.value.path.name == file
    assert not list(out.iterdir()) and not (tmp_path / "PWNED").exists()


def test_settings_dicts_are_read_without_allow_pickle(tmp_path: Path) -> None:
    when = datetime.datetime(2026, 12, 2, 9, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    np.save(tmp_path / "settings.npy", {"fs": np.float64(15.5), "date_proc": when, "diameter": [12.0, 12.0],
                                        "io": {"save_mat": False}, "ref": np.arange(4, dtype=np.int16)})
    d = read_suite2p_dict(tmp_path / "settings.npy")
    assert d["fs"] == 15.5 and d["date_proc"] == when and d["io"] == {"save_mat": False}
    np.testing.assert_array_equal(d["ref"], np.arange(4))


def test_the_movie_is_converted_a_block_at_a_time(tmp_path: Path) -> None:
    import tracemalloc

    write_plane(tmp_path / "plane0", _movie(n=800, shape=(64, 64), seed=4), fs=15.0)  # 6.6 MB int16, 13 MB float32
    pose, _ = _pose(tmp_path, n=100)
    tracemalloc.start()
    try:
        path = import_suite2p(tmp_path / "plane0", tmp_path, animal_id="a", trial_id="t", pose=pose,
                              pose_rate_hz=2.0, joint_names=JOINTS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3_000_000, f"import held {peak / 1e6:.1f} MB at once for a 13 MB float32 movie"
    with open_trial(path) as t:
        assert t.n_neural == 800 and t.frame_dtype == np.float32
        np.testing.assert_array_equal(t.neural[799], _movie(n=800, shape=(64, 64), seed=4)[799].astype(np.float32))
