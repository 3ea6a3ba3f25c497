"""Pose files of DeepLabCut, SLEAP and Anipose, written by the tools' own writers (movement's
savers, sleap-io) or as the tool documents them (Anipose's CSV), import exactly through every
importer that takes a pose file, with their joint names; broken ones fail naming the file."""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# The pose extra is installed by `make install` (CI too): there a missing package fails the run.
_require = importlib.import_module if os.environ.get("CI") else functools.partial(
    pytest.importorskip, reason="the pose extra is not installed (pip install -e '.[pose]')")
_shown = warnings.showwarning
_require("movement")  # its import routes every Python warning to its own logger: undone below
sio = _require("sleap_io")

from movement.io import load_poses, save_poses  # noqa: E402

warnings.showwarning = _shown

from tools.cli import main  # noqa: E402
from trainer.data.importers import ImportAssumptionWarning, import_numpy, import_tiff_deepfly3d  # noqa: E402
from trainer.data.pose_files import detect_format, read_pose_file  # noqa: E402
from trainer.data.recording import RecordingError, open_trial  # noqa: E402
from trainer.data.schema import JOINT_NAMES  # noqa: E402

MOUSE = ["snout", "left_ear", "right_ear", "neck", "tail_base"]  # not alphabetical: the order must survive


def _positions(t: int = 120, joints: int = 5, dims: int = 2, animals: int = 1, seed: int = 0) -> np.ndarray:
    """movement's layout: time x space x keypoints x individuals."""
    return np.random.default_rng(seed).normal(300.0, 40.0, (t, dims, joints, animals))


def _dataset(position: np.ndarray, names: list[str] = MOUSE, animals: list[str] | None = None,
             confidence: np.ndarray | None = None) -> Any:
    t, _, j, n = position.shape
    return load_poses.from_numpy(position, np.full((t, j, n), 0.95) if confidence is None else confidence,
                                 individual_names=animals or [f"mouse{i}" for i in range(n)], keypoint_names=names)


def _expected(position: np.ndarray, animal: int = 0) -> np.ndarray:
    """T x J x 3 as read: z = 0 for 2-D (NaN for a missing point)."""
    points = position[..., animal].transpose(0, 2, 1)
    if points.shape[2] == 2:
        points = np.concatenate([points, np.where(np.isnan(points[..., :1]), np.nan, 0.0)], axis=2)
    return points.astype(np.float32)


def write_anipose_csv(path: Path, points: np.ndarray, names: list[str], score: np.ndarray | None = None) -> Path:
    """Anipose's triangulation output (`pose-3d/*.csv`): per joint x, y, z, error, ncams, score;
    then the alignment matrix M_ij, the centre and the frame number, as anipose writes them."""
    t = len(points)
    score = np.full((t, len(names)), 0.9) if score is None else score
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(names):
        for k, axis in enumerate("xyz"):
            columns[f"{name}_{axis}"] = points[:, j, k]
        columns[f"{name}_error"] = np.full(t, 0.5)
        columns[f"{name}_ncams"] = np.full(t, 3)
        columns[f"{name}_score"] = score[:, j]
    for i in range(3):
        for k in range(3):
            columns[f"M_{i}{k}"] = np.full(t, float(i == k))
    for i in range(3):
        columns[f"center_{i}"] = np.zeros(t)
    columns["fnum"] = np.arange(t)
    header = ",".join(columns)
    rows = np.column_stack(list(columns.values()))
    np.savetxt(path, rows, delimiter=",", header=header, comments="", fmt="%.9g")
    return path


def _neural(tmp_path: Path, n: int = 24) -> Path:
    frames = np.random.default_rng(1).integers(0, 3000, (n, 8, 10)).astype(np.uint16)
    np.save(tmp_path / "frames.npy", frames)
    return tmp_path / "frames.npy"


@pytest.mark.parametrize("suffix", [".h5", ".csv"])
def test_deeplabcut_single_animal_round_trip(tmp_path: Path, suffix: str) -> None:
    position = _positions()
    save_poses.to_dlc_file(_dataset(position), tmp_path / f"video1DLC_resnet50{suffix}", split_individuals=True)
    (written,) = tmp_path.glob(f"*{suffix}")  # movement names a single-animal file after its individual
    assert detect_format(written) == "dlc"
    with pytest.warns(ImportAssumptionWarning, match="2-D, in image pixels; stored with z = 0"):
        pose = read_pose_file(written)
    assert pose.joint_names == MOUSE and pose.info["pose_format"] == "dlc" and pose.info["pose_dimensions"] == 2
    np.testing.assert_allclose(pose.points, _expected(position), rtol=1e-6)


def test_deeplabcut_multi_animal_needs_an_individual(tmp_path: Path) -> None:
    position = _positions(animals=2)
    path = tmp_path / "maDLC.h5"
    save_poses.to_dlc_file(_dataset(position, animals=["mouseA", "mouseB"]), path, split_individuals=False)
    with pytest.raises(RecordingError, match=r"2 individuals \(mouseA, mouseB\).*--pose-individual NAME"):
        read_pose_file(path)
    with pytest.raises(RecordingError, match="no individual 'mouseC'; the file has: mouseA, mouseB"):
        read_pose_file(path, individual="mouseC")
    with pytest.warns(ImportAssumptionWarning):
        pose = read_pose_file(path, individual="mouseB")
    np.testing.assert_allclose(pose.points, _expected(position, animal=1), rtol=1e-6)
    assert pose.info["pose_individual"] == "mouseB"


def test_low_confidence_points_are_missing_and_interpolated(tmp_path: Path) -> None:
    position = _positions(t=60)
    confidence = np.full((60, 5, 1), 0.95)
    confidence[10, 2] = 0.1  # one low-likelihood detection of right_ear
    path = tmp_path / "pose.h5"
    save_poses.to_dlc_file(_dataset(position, confidence=confidence), path, split_individuals=False)
    with pytest.warns(ImportAssumptionWarning):
        pose = read_pose_file(path, min_confidence=0.5)
    assert np.isnan(pose.points[10, 2]).all() and np.isfinite(np.delete(pose.points, 10, axis=0)).all()
    assert pose.info["pose_below_confidence"] == 1
    out = tmp_path / "ds"
    out.mkdir()
    with pytest.warns(ImportAssumptionWarning):
        trial = import_numpy(out, animal_id="m1", trial_id="t0", neural=_neural(tmp_path), pose=path,
                             neural_rate_hz=4.0, pose_rate_hz=20.0, pose_min_confidence=0.5)
    with open_trial(trial) as t:
        expected = _expected(position)
        np.testing.assert_allclose(t.pose[10, 2], (expected[9, 2] + expected[11, 2]) / 2, rtol=1e-5)
        np.testing.assert_allclose(t.pose[9], expected[9], rtol=1e-6)


def test_sleap_analysis_file_round_trip(tmp_path: Path) -> None:
    position = _positions()
    position[7, :, 3] = np.nan  # a node SLEAP did not find in frame 7
    path = tmp_path / "session.analysis.h5"
    save_poses.to_sleap_analysis_file(_dataset(position), path)
    assert detect_format(path) == "sleap"
    with pytest.warns(ImportAssumptionWarning):
        pose = read_pose_file(path)
    assert pose.joint_names == MOUSE and pose.info["pose_format"] == "sleap" and pose.info["pose_missing_points"] == 1
    np.testing.assert_allclose(pose.points, _expected(position), rtol=1e-6)  # NaN where SLEAP had none


def test_sleap_labels_file_round_trip(tmp_path: Path) -> None:
    skeleton = sio.Skeleton(list(MOUSE))  # sleap-io turns the list it is given into Nodes
    video = sio.Video(filename=str(tmp_path / "cam0.mp4"), open_backend=False)
    points = _positions(t=30)[..., 0].transpose(0, 2, 1)  # T x J x 2
    frames = [sio.LabeledFrame(video=video, frame_idx=i, instances=[sio.PredictedInstance.from_numpy(
        points[i], skeleton=skeleton, point_scores=np.full(len(MOUSE), 0.9), score=0.9)]) for i in range(30)]
    path = tmp_path / "predictions.slp"
    sio.save_slp(sio.Labels(labeled_frames=frames, videos=[video], skeletons=[skeleton]), str(path))
    with pytest.warns(ImportAssumptionWarning):
        pose = read_pose_file(path)
    assert pose.joint_names == MOUSE
    np.testing.assert_allclose(pose.points[:, :, :2], points, rtol=1e-5)


def test_anipose_three_d_keeps_the_files_joint_order(tmp_path: Path) -> None:
    points = np.random.default_rng(3).normal(0, 5, (80, 5, 3))
    path = write_anipose_csv(tmp_path / "pose-3d.csv", points, MOUSE)
    assert detect_format(path) == "anipose"
    with pytest.warns(ImportAssumptionWarning, match="unit of its calibration board"):
        pose = read_pose_file(path)
    assert pose.joint_names == MOUSE  # movement sorts them; the file's order is restored
    np.testing.assert_allclose(pose.points, points.astype(np.float32), rtol=1e-6)
    assert pose.info["pose_dimensions"] == 3


def test_every_importer_takes_a_pose_file(tmp_path: Path) -> None:
    """import numpy and import tiff through the command line: DeepLabCut pose, its joint names, a clock from the rate."""
    import tifffile

    position = _positions(t=100)
    pose = tmp_path / "pose.h5"
    save_poses.to_dlc_file(_dataset(position), pose, split_individuals=False)
    neural = _neural(tmp_path, n=20)
    tifffile.imwrite(tmp_path / "stack.tif", np.load(neural))
    (tmp_path / "labels.csv").write_text("start,stop,label\n0,50,rear\n50,100,groom\n")
    common = ["--pose", str(pose), "--pose-rate", "50", "--neural-rate", "10", "--labels", str(tmp_path / "labels.csv"),
              "--class-names", "rear,groom", "--animal", "m1", "--out", str(tmp_path)]
    assert main(["import", "numpy", "--neural", str(neural), "--trial", "npy", *common]) == 0
    assert main(["import", "tiff", "--tiff", str(tmp_path / "stack.tif"), "--trial", "tif", *common]) == 0
    for trial in ("npy", "tif"):
        with open_trial(tmp_path / f"m1_{trial}.h5") as t:
            assert t.joint_names == MOUSE and t.class_names == ["rear", "groom"]
            np.testing.assert_allclose(t.pose, _expected(position), rtol=1e-6)
            np.testing.assert_allclose(t.pose_times, np.arange(100) / 50.0)
            np.testing.assert_array_equal(t.neural[()], np.load(neural))
            assert t.labels[0] == 0 and t.labels[99] == 1
            assert t.attrs["pose_format"] == "dlc" and t.attrs["pose"] == "pose.h5"
    # names given on the command line must agree with the file's
    assert main(["import", "numpy", "--neural", str(neural), "--trial", "x", *common, "--joint-names", "a,b,c,d,e"]) == 1
    assert not (tmp_path / "m1_x.h5").exists()


def test_deepfly3d_still_reads_as_before(tmp_path: Path) -> None:
    points = np.random.default_rng(0).normal(0, 1, (50, 38, 3))
    path = tmp_path / "pose_result__data.pkl"
    with open(path, "wb") as f:
        pickle.dump({"points3d": points}, f)
    pose = read_pose_file(path)
    assert pose.joint_names == list(JOINT_NAMES) and pose.info["pose_format"] == "deepfly3d"
    np.testing.assert_array_equal(pose.points, points.astype(np.float32))
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((5, 4, 4), np.uint16))
    trial = import_tiff_deepfly3d(tmp_path / "s.tif", path, tmp_path, animal_id="f", trial_id="t",
                                  neural_rate_hz=2.0, pose_rate_hz=20.0)
    with open_trial(trial) as t:
        assert t.attrs["source"] == "tiff+deepfly3d" and t.joint_names == list(JOINT_NAMES)


@pytest.mark.parametrize("what, write, kwargs, message", [
    ("missing file", None, {}, "pose file does not exist"),
    ("unknown suffix", lambda p: p.with_suffix(".txt").write_text("x"), {}, "cannot tell the pose format from the suffix"),
    ("csv of neither tool", lambda p: p.with_suffix(".csv").write_text("a,b\n1,2\n"), {},
     "neither DeepLabCut's .* nor Anipose's"),
    ("broken DeepLabCut csv", lambda p: p.with_suffix(".csv").write_text("scorer,x\nbodyparts,y\n1,2\n"), {},
     "not a readable DeepLabCut pose file"),
    ("binary csv", lambda p: p.with_suffix(".csv").write_bytes(b"\xff\xfe\x00\x81" * 8), {},
     "not a readable CSV pose file"),
    ("h5 that is not HDF5", lambda p: p.with_suffix(".h5").write_text("not hdf5"), {}, "not a readable HDF5 pose file"),
    ("HDF5 without DeepLabCut's table", lambda p: __import__("h5py").File(p.with_suffix(".h5"), "w").close(),
     {}, "not a readable DeepLabCut pose file"),
    ("confidence on a bare array", lambda p: np.save(p.with_suffix(".npy"), np.zeros((4, 2, 3))),
     {"min_confidence": 0.5}, "apply to DeepLabCut, SLEAP and Anipose files, not numpy"),
    ("array of the wrong shape", lambda p: np.save(p.with_suffix(".npy"), np.zeros((4, 2, 5))), {},
     r"pose has shape \(4, 2, 5\)"),
])
def test_broken_pose_files(tmp_path: Path, what: str, write: Any, kwargs: dict[str, Any], message: str) -> None:
    base = tmp_path / "pose"
    if write is not None:
        write(base)
    path = next(tmp_path.glob("pose.*"), base.with_suffix(".h5"))
    with pytest.raises(RecordingError, match=message) as err:
        read_pose_file(path, **kwargs)
    assert str(path) in str(err.value)


def test_a_joint_never_found_is_an_error_naming_it(tmp_path: Path) -> None:
    position = _positions(t=40)
    position[:, :, 1] = np.nan  # left_ear never tracked
    save_poses.to_sleap_analysis_file(_dataset(position), tmp_path / "a.analysis.h5")
    with pytest.warns(ImportAssumptionWarning), pytest.raises(RecordingError, match="a.analysis.h5: joint left_ear has no finite"):
        import_numpy(tmp_path, animal_id="m", trial_id="t", neural=_neural(tmp_path), pose=tmp_path / "a.analysis.h5",
                     neural_rate_hz=4.0, pose_rate_hz=20.0)
    assert not list(tmp_path.glob("*m_t*"))  # nothing half-written
