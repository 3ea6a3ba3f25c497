"""Importers round-trip exactly, refuse bad files with a clear message, and never leave half files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools.cli import main
from trainer.data.importers import import_numpy, import_tiff_deepfly3d, read_deepfly3d_pose, read_labels_csv
from trainer.data.recording import RecordingError, open_trial
from trainer.data.schema import ACTION_NAMES, JOINT_NAMES


@pytest.fixture
def lab_files(tmp_path: Path) -> dict[str, object]:
    """A TIFF stack, a DeepFly3D pose pickle and a bout-style labels CSV, as a lab would have them."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 4096, (30, 16, 20), dtype=np.uint16)
    points = rng.normal(0, 1, (190, 38, 3))
    tiff = tmp_path / "stack.tif"
    tifffile.imwrite(tiff, frames)
    pose = tmp_path / "pose_result__data.pkl"
    with open(pose, "wb") as f:
        pickle.dump({"points3d": points, "points2d": rng.normal(size=(7, 190, 38, 2)), "camera_ordering": [0, 1]}, f)
    labels = tmp_path / "labels.csv"
    labels.write_text("start,stop,label\n0,50,resting\n50,120,forward_walking\n150,190,3\n")
    expected = np.full(190, -1)
    expected[:50], expected[50:120], expected[150:] = 2, 0, 3
    return dict(frames=frames, points=points, tiff=tiff, pose=pose, labels=labels, expected_labels=expected)


def test_tiff_deepfly3d_round_trip(tmp_path: Path, lab_files: dict) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    path = import_tiff_deepfly3d(lab_files["tiff"], lab_files["pose"], out, animal_id="fly7", trial_id="001",
                                 neural_rate_hz=16.23, pose_rate_hz=100.0, labels_csv=lab_files["labels"],
                                 neural_start_s=0.02)
    assert path == out / "fly7_001.h5"
    with open_trial(path) as t:
        np.testing.assert_array_equal(t.neural[()], lab_files["frames"])
        np.testing.assert_array_equal(t.pose, lab_files["points"].astype(np.float32))
        np.testing.assert_array_equal(t.labels, lab_files["expected_labels"])
        np.testing.assert_allclose(t.neural_times, 0.02 + np.arange(30) / 16.23)
        np.testing.assert_allclose(t.pose_times, np.arange(190) / 100.0)
        assert t.joint_names == list(JOINT_NAMES) and t.class_names == list(ACTION_NAMES)
        assert t.attrs["source"] == "tiff+deepfly3d"
    with pytest.raises(RecordingError, match="already exists"):
        import_tiff_deepfly3d(lab_files["tiff"], lab_files["pose"], out, animal_id="fly7", trial_id="001",
                              neural_rate_hz=16.23, pose_rate_hz=100.0)


def test_two_channel_stack(tmp_path: Path, lab_files: dict) -> None:
    stack = np.stack([lab_files["frames"], lab_files["frames"] // 2 + 1], axis=1)  # T x C x H x W
    tiff = tmp_path / "two.tif"
    tifffile.imwrite(tiff, stack, photometric="minisblack")
    path = import_tiff_deepfly3d(tiff, lab_files["pose"], tmp_path / "c1.h5", animal_id="a", trial_id="t",
                                 neural_rate_hz=16, pose_rate_hz=100, channel=1)
    with open_trial(path) as t:
        np.testing.assert_array_equal(t.neural[()], stack[:, 1])
        assert t.attrs["channel"] == 1


def test_cli_import_tiff(tmp_path: Path, lab_files: dict) -> None:
    out = tmp_path / "trial.h5"
    argv = ["import", "tiff", "--tiff", str(lab_files["tiff"]), "--pose", str(lab_files["pose"]),
            "--labels", str(lab_files["labels"]), "--neural-rate", "16", "--pose-rate", "100",
            "--animal", "a", "--trial", "t", "--out", str(out)]
    assert main(argv) == 0
    with open_trial(out) as t:
        np.testing.assert_array_equal(t.neural[()], lab_files["frames"])
    assert main(argv) == 1  # exists
    assert main([*argv, "--force"]) == 0
    # the labels CSV names resting and forward_walking and uses index 3: their own names instead
    (tmp_path / "classes.json").write_text('{"forward_walking": 0, "x": 1, "resting": 2, "push": 3}')
    assert main([*argv, "--force", "--class-names", str(tmp_path / "classes.json")]) == 0
    with open_trial(out) as t:
        assert t.class_names == ["forward_walking", "x", "resting", "push"]
        np.testing.assert_array_equal(t.labels, lab_files["expected_labels"])


def test_missing_joints_are_interpolated(tmp_path: Path) -> None:
    points = np.arange(5 * 38 * 3, dtype=np.float64).reshape(5, 38, 3)
    points[2, 4] = np.nan
    p = tmp_path / "pose.pkl"
    p.write_bytes(pickle.dumps({"points3d": points}))
    got = read_deepfly3d_pose(p)
    np.testing.assert_allclose(got[2, 4], 0.5 * (points[1, 4] + points[3, 4]))
    points[:, 7] = np.nan
    p.write_bytes(pickle.dumps({"points3d": points}))
    with pytest.raises(RecordingError, match="joint RM_FTi has no finite coordinate"):
        read_deepfly3d_pose(p)


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch /tmp/actionloop-pwned",))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (pickle.dumps({"points2d": np.zeros((2, 5, 38, 2))}), r"no 'points3d' in the pose pickle \(found \['points2d'\]\)"),
        (pickle.dumps({"points3d": np.zeros((5, 30, 3))}), r"points3d has shape \(5, 30, 3\), expected T x 38 x 3"),
        (pickle.dumps({"points3d": np.zeros((5, 38, 3), dtype=np.int32)}), "expected floating point"),
        (pickle.dumps([1, 2, 3]), "no 'points3d'"),
        (b"not a pickle at all", "not a readable DeepFly3D pose pickle"),
        (pickle.dumps({"points3d": _Evil()}), "refusing to load posix.system"),
    ],
)
def test_bad_pose_pickles(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "pose.pkl"
    p.write_bytes(content)
    with pytest.raises(RecordingError, match=message) as info:
        read_deepfly3d_pose(p)
    assert "pose.pkl" in str(info.value)
    assert not Path("/tmp/actionloop-pwned").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("frame,label\n0,resting\n3,flying\n", "line 3: unknown class 'flying'"),
        ("frame,label\n0,resting\n10,resting\n", r"line 3: frame 10 outside 0\.\.9"),
        ("frame,label\nx,resting\n", "line 2: frame 'x' is not an integer"),
        ("frame,label\n0,9\n", r"class index 9 outside 0\.\.6"),
        ("start,stop,label\n5,2,resting\n", "stop 2 is not after start 5"),
        ("time,what\n0,resting\n", "has no 'label' column"),
        ("t,label\n0,resting\n", "needs 'frame,label' or 'start,stop,label'"),
        ("", "empty"),
        ("frame,label\n0\n", "line 2: expected 2 columns"),
    ],
)
def test_bad_label_csvs(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "labels.csv"
    p.write_text(text)
    with pytest.raises(RecordingError, match=message):
        read_labels_csv(p, 10)


def test_per_frame_labels_csv(tmp_path: Path) -> None:
    p = tmp_path / "labels.csv"
    p.write_text("Frame,Action\n0,resting\n1,antennal_grooming\n3,-1\n4,6\n")
    np.testing.assert_array_equal(read_labels_csv(p, 6), [2, 5, -1, -1, 6, -1])


def test_bad_tiffs(tmp_path: Path, lab_files: dict) -> None:
    def attempt(tiff: Path) -> None:
        import_tiff_deepfly3d(tiff, lab_files["pose"], tmp_path / "x.h5", animal_id="a", trial_id="t",
                              neural_rate_hz=16, pose_rate_hz=100)

    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((4, 2, 8, 8), dtype=np.uint16), photometric="minisblack")
    with pytest.raises(RecordingError, match=r"array of shape \(4, 2, 8, 8\).*--channel"):
        attempt(rgb)
    with pytest.raises(RecordingError, match=r"channel 2 outside 0\.\.1"):
        import_tiff_deepfly3d(rgb, lab_files["pose"], tmp_path / "x.h5", animal_id="a", trial_id="t",
                              neural_rate_hz=16, pose_rate_hz=100, channel=2)
    signed = tmp_path / "signed.tif"
    tifffile.imwrite(signed, np.zeros((4, 8, 8), dtype=np.int32), photometric="minisblack")
    with pytest.raises(RecordingError, match="int32"):
        attempt(signed)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00garbage")
    with pytest.raises(RecordingError, match="junk.tif: TIFF holds no image data"):
        attempt(junk)
    (tmp_path / "text.tif").write_text("hello")
    with pytest.raises(RecordingError, match="text.tif: not a readable TIFF stack"):
        attempt(tmp_path / "text.tif")
    with pytest.raises(RecordingError, match="TIFF file does not exist"):
        attempt(tmp_path / "absent.tif")
    assert not (tmp_path / "x.h5").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_labels_beyond_pose_leave_nothing(tmp_path: Path, lab_files: dict) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("start,stop,label\n0,500,resting\n")
    with pytest.raises(RecordingError, match="stop 500 outside"):
        import_tiff_deepfly3d(lab_files["tiff"], lab_files["pose"], tmp_path / "x.h5", animal_id="a", trial_id="t",
                              neural_rate_hz=16, pose_rate_hz=100, labels_csv=bad)
    assert not list(tmp_path.glob("*.h5")) and not list(tmp_path.glob(".*tmp"))


def test_numpy_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrays = dict(
        neural=rng.random((12, 6, 7), dtype=np.float32),
        pose=rng.normal(size=(80, 5, 3)).astype(np.float32),
        neural_times=np.cumsum(rng.uniform(0.05, 0.07, 12)),
        pose_times=np.arange(80) / 100.0,
        labels=rng.integers(-1, 3, 80),
        joint_names=np.array(["head", "thorax", "abdomen", "left", "right"]),
        class_names=np.array(["a", "b", "c"]),
    )
    src = tmp_path / "trial.npz"
    np.savez(src, **arrays)
    path = import_numpy(tmp_path / "t.h5", animal_id="m1", trial_id="s2", npz=src)
    with open_trial(path) as t:
        for key in ("neural", "pose", "neural_times", "pose_times", "labels"):
            np.testing.assert_array_equal(np.asarray(getattr(t, key)[()]), arrays[key])
        assert t.joint_names == ["head", "thorax", "abdomen", "left", "right"]
        assert t.class_names == ["a", "b", "c"]


def test_numpy_npy_files_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 60000, (9, 5, 5)).astype(np.uint16)
    pose = rng.normal(size=(60, 38, 3)).astype(np.float32)
    labels = rng.integers(-1, 7, 60)
    for name, arr in (("n", frames), ("p", pose), ("l", labels)):
        np.save(tmp_path / f"{name}.npy", arr)
    argv = ["import", "numpy", "--neural", str(tmp_path / "n.npy"), "--pose", str(tmp_path / "p.npy"),
            "--labels", str(tmp_path / "l.npy"), "--neural-rate", "16", "--pose-rate", "100",
            "--class-names", "default", "--animal", "a", "--trial", "t", "--out", str(tmp_path)]
    assert main(argv) == 0
    with open_trial(tmp_path / "a_t.h5") as t:
        np.testing.assert_array_equal(t.neural[()], frames)
        np.testing.assert_array_equal(t.pose, pose)
        np.testing.assert_array_equal(t.labels, labels)


def test_bad_numpy_inputs(tmp_path: Path) -> None:
    np.savez(tmp_path / "nopose.npz", neural=np.zeros((3, 4, 4), np.uint16))
    with pytest.raises(RecordingError, match=r"missing array 'pose' \(found \['neural'\]\)"):
        import_numpy(tmp_path / "x.h5", animal_id="a", trial_id="t", npz=tmp_path / "nopose.npz",
                     neural_rate_hz=16, pose_rate_hz=100)
    np.savez(tmp_path / "norate.npz", neural=np.zeros((3, 4, 4), np.uint16), pose=np.zeros((5, 38, 3)))
    with pytest.raises(RecordingError, match="no neural timestamps: looked for neural_times"):
        import_numpy(tmp_path / "x.h5", animal_id="a", trial_id="t", npz=tmp_path / "norate.npz")
    np.savez(tmp_path / "joints.npz", neural=np.zeros((3, 4, 4), np.uint16), pose=np.zeros((5, 12, 3)))
    with pytest.raises(RecordingError, match="12 joints and no joint names"):
        import_numpy(tmp_path / "x.h5", animal_id="a", trial_id="t", npz=tmp_path / "joints.npz",
                     neural_rate_hz=16, pose_rate_hz=100)
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(RecordingError, match="junk.npy: not a readable .npy"):
        import_numpy(tmp_path / "x.h5", animal_id="a", trial_id="t", neural=tmp_path / "junk.npy",
                     pose=tmp_path / "junk.npy", neural_rate_hz=16, pose_rate_hz=100)
    with pytest.raises(ValueError, match="either npz or"):
        import_numpy(tmp_path / "x.h5", animal_id="a", trial_id="t", npz=tmp_path / "norate.npz",
                     neural=tmp_path / "junk.npy")
    assert main(["import", "numpy", "--npz", str(tmp_path / "nopose.npz"), "--neural-rate", "16",
                 "--pose-rate", "100", "--animal", "a", "--trial", "t", "--out", str(tmp_path / "x.h5")]) == 1
    assert not (tmp_path / "x.h5").exists()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from(list("frame,stop,labelstart0123456789-\n resting_abc\"")), max_size=120))
def test_labels_csv_fuzz(tmp_path: Path, text: str) -> None:
    """Any text: valid labels or a RecordingError, nothing else."""
    p = tmp_path / "fuzz.csv"
    p.write_text(text)
    try:
        labels = read_labels_csv(p, 20)
    except RecordingError:
        return
    assert labels.shape == (20,) and labels.min() >= -1 and labels.max() < len(ACTION_NAMES)
