"""Recording format: round trip, alignment by timestamps, atomic writes, and every error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from trainer.data.recording import RecordingError, list_trials, open_trial, write_trial
from trainer.data.schema import ACTION_NAMES, JOINT_NAMES, SCHEMA_VERSION, skeleton_edges


def test_schema_names() -> None:
    assert ACTION_NAMES == ("forward_walking", "backward_walking", "resting", "foreleg_grooming",
                            "hindleg_grooming", "antennal_grooming", "abdominal_grooming")
    assert len(JOINT_NAMES) == 38 and len(set(JOINT_NAMES)) == 38
    assert all(0 <= a < 38 and 0 <= b < 38 for a, b in skeleton_edges())


@pytest.mark.parametrize("in_memory", [False, True])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_round_trip(tmp_path: Path, in_memory: bool, dtype: type, make_arrays: Callable[..., dict]) -> None:
    arrays = make_arrays()
    arrays["neural"] = arrays["neural"].astype(dtype)
    path = write_trial(tmp_path / "a.h5", **arrays, extra={"source": "test"})
    with open_trial(path, in_memory=in_memory) as t:
        assert (t.animal_id, t.trial_id) == ("fly0", "t0")
        assert t.frame_dtype == np.dtype(dtype)
        np.testing.assert_array_equal(np.asarray(t.neural[()]), arrays["neural"])
        np.testing.assert_array_equal(t.neural_times, arrays["neural_times"])
        np.testing.assert_array_equal(t.pose, arrays["pose"])
        np.testing.assert_array_equal(t.pose_times, arrays["pose_times"])
        np.testing.assert_array_equal(t.labels, arrays["labels"])
        assert t.joint_names == list(JOINT_NAMES)
        assert t.class_names == list(ACTION_NAMES)
        assert (t.neural_rate_hz, t.pose_rate_hz) == (16.0, 100.0)
        assert t.attrs == {"source": "test"}
        assert isinstance(t.neural, np.ndarray) == in_memory
    with h5py.File(path) as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        assert f["neural/frames"].chunks[0] <= 8  # windows read a few chunks, not whole trials


def test_neural_labels_take_pose_frame_at_or_before(make_arrays: Callable[..., dict]) -> None:
    arrays = make_arrays(neural_start=0.013)
    from trainer.data.recording import Trial

    t = Trial(path=Path("x"), animal_id="a", trial_id="t", neural=arrays["neural"],
              neural_times=arrays["neural_times"], pose=arrays["pose"], pose_times=arrays["pose_times"],
              joint_names=list(JOINT_NAMES), labels=arrays["labels"], class_names=list(ACTION_NAMES),
              neural_rate_hz=16.0, pose_rate_hz=100.0)
    got = t.neural_labels()
    # Neural frame k at 0.013 + k/16 s: the pose frame at or before is floor(100 * t).
    expected = arrays["labels"][np.floor(arrays["neural_times"] * 100 + 1e-9).astype(int)]
    np.testing.assert_array_equal(got, expected)
    # A neural frame before the first pose frame has no label.
    t.pose_times = t.pose_times + 0.02
    assert t.neural_labels()[0] == -1
    t.labels = None
    assert (t.neural_labels() == -1).all()


def test_pose_at_interpolates_and_clamps(make_arrays: Callable[..., dict]) -> None:
    arrays = make_arrays()
    from trainer.data.recording import Trial

    t = Trial(path=Path("x"), animal_id="a", trial_id="t", neural=arrays["neural"],
              neural_times=arrays["neural_times"], pose=arrays["pose"], pose_times=arrays["pose_times"],
              joint_names=list(JOINT_NAMES), labels=None, class_names=[], neural_rate_hz=16.0, pose_rate_hz=100.0)
    p = arrays["pose"]
    got = t.pose_at(np.array([0.0, 0.015, 0.05, -1.0, 1e6]))
    np.testing.assert_allclose(got[0], p[0])
    np.testing.assert_allclose(got[1], 0.5 * p[1] + 0.5 * p[2], atol=1e-5)
    np.testing.assert_allclose(got[2], p[5], atol=1e-6)
    np.testing.assert_allclose(got[3], p[0])
    np.testing.assert_allclose(got[4], p[-1])
    assert t.neural_pose().shape == (len(arrays["neural_times"]), 38, 3)


def test_rates_inferred_from_timestamps(tmp_path: Path, make_arrays: Callable[..., dict]) -> None:
    arrays = make_arrays()
    del arrays["neural_rate_hz"], arrays["pose_rate_hz"]
    with open_trial(write_trial(tmp_path / "a.h5", **arrays)) as t:
        assert t.neural_rate_hz == pytest.approx(16.0)
        assert t.pose_rate_hz == pytest.approx(100.0)


def test_labels_optional(tmp_path: Path, make_arrays: Callable[..., dict]) -> None:
    arrays = make_arrays()
    arrays["labels"] = None
    with open_trial(write_trial(tmp_path / "a.h5", **arrays)) as t:
        assert t.labels is None and t.class_names == []


def test_list_trials(tmp_path: Path, small_dataset: list[Path]) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".partial.h5").write_text("x")  # hidden temporaries are not trials
    assert list_trials(tmp_path) == sorted(small_dataset)
    with pytest.raises(RecordingError, match="does not exist"):
        list_trials(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RecordingError, match=r"no \*\.h5"):
        list_trials(empty)


# --- the writer refuses bad input and leaves nothing behind ---------------------------------

@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"neural_times": "reverse"}, "neural times is not strictly increasing"),
        ({"pose_times": "duplicate"}, "pose times is not strictly increasing"),
        ({"neural": "2d"}, "neural frames have shape"),
        ({"neural": "int32"}, "neural frames have dtype int32"),
        ({"pose": "2joints"}, "joint names for 2 pose joints"),
        ({"labels": "short"}, "labels have shape"),
        ({"labels": "range"}, "outside -1..6"),
        ({"labels": "float"}, "expected integers"),
        ({"animal_id": ""}, "animal_id must be a non-empty string"),
        ({"neural_rate_hz": -1.0}, "neural_rate_hz is -1.0"),
        ({"pose": "nan"}, "NaN"),
        ({"neural_times": "nan"}, "NaN"),
    ],
)
def test_write_rejects_bad_input(tmp_path: Path, change: dict, message: str, make_arrays: Callable[..., dict]) -> None:
    arrays = make_arrays()
    key, how = next(iter(change.items()))
    value = arrays[key]
    if how == "reverse":
        value = value[::-1].copy()
    elif how == "duplicate":
        value = value.copy()
        value[5] = value[4]
    elif how == "2d":
        value = value[:, 0]
    elif how == "int32":
        value = value.astype(np.int32)
    elif how == "2joints":
        value = value[:, :2]
    elif how == "short":
        value = value[:-1]
    elif how == "range":
        value = value.copy()
        value[3] = 7
    elif how == "float":
        value = value.astype(np.float64)
    elif how == "nan":
        value = value.astype(np.float64 if key.endswith("times") else np.float32)
        value.flat[3] = np.nan
    else:
        value = how
    arrays[key] = value
    with pytest.raises(RecordingError, match=message) as info:
        write_trial(tmp_path / "bad.h5", **arrays)
    assert "bad.h5" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no half-written file, no temporary


def test_write_interrupted_leaves_nothing(tmp_path: Path, make_arrays: Callable[..., dict]) -> None:
    arrays = make_arrays(n_neural=200)
    frames = arrays["neural"]

    class Exploding:
        """A source stack that fails part-way through, like a TIFF on a dropped network share."""

        shape = frames.shape
        dtype = frames.dtype

        def __getitem__(self, item: slice) -> np.ndarray:
            if item.start and item.start > 64:
                raise OSError("disk went away")
            return frames[item]

    arrays["neural"] = Exploding()
    with pytest.raises(OSError, match="disk went away"):
        write_trial(tmp_path / "a.h5", **arrays)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_is_atomic(tmp_path: Path, make_arrays: Callable[..., dict]) -> None:
    good = write_trial(tmp_path / "a.h5", **make_arrays(seed=1))
    bad = make_arrays(seed=2)
    bad["labels"] = bad["labels"][:-1]
    with pytest.raises(RecordingError):
        write_trial(good, **bad)
    with open_trial(good) as t:  # the old file is untouched
        assert t.animal_id == "fly1"


# --- the reader names the file and the problem ------------------------------------------------

def _corrupt(path: Path, how: str) -> None:
    with h5py.File(path, "r+") as f:
        if how == "missing_frames":
            del f["neural/frames"]
        elif how == "missing_pose_times":
            del f["pose/times"]
        elif how == "version":
            f.attrs["schema_version"] = 99
        elif how == "no_version":
            del f.attrs["schema_version"]
        elif how == "nonmonotonic":
            t = f["neural/times"][()]
            t[10] = t[2]
            f["neural/times"][...] = t
        elif how == "times_length":
            t = f["pose/times"][()]
            del f["pose/times"]
            f["pose/times"] = t[:-3]
        elif how == "pose_shape":
            p = f["pose/points3d"][()]
            del f["pose/points3d"]
            f["pose/points3d"] = p[..., :2]
        elif how == "pose_dtype":
            p = f["pose/points3d"][()]
            del f["pose/points3d"]
            f["pose/points3d"] = p.astype(np.float64)
        elif how == "labels_range":
            f["labels/actions"][0] = 42
        elif how == "missing_class_names":
            del f["labels/class_names"]
        elif how == "missing_rate":
            del f.attrs["pose_rate_hz"]
        elif how == "zero_rate":
            f.attrs["neural_rate_hz"] = 0.0
        elif how == "frames_dtype":
            x = f["neural/frames"][()]
            del f["neural/frames"]
            f["neural/frames"] = x.astype(np.int64)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing_frames", "missing dataset 'neural/frames'"),
        ("missing_pose_times", "missing dataset 'pose/times'"),
        ("version", "unknown schema version 99"),
        ("no_version", "no 'schema_version' attribute"),
        ("nonmonotonic", "neural times is not strictly increasing"),
        ("times_length", r"pose times has shape \(\d+,\), expected"),
        ("pose_shape", "pose has shape"),
        ("pose_dtype", "pose has dtype float64"),
        ("labels_range", "labels range"),
        ("missing_class_names", "missing dataset 'labels/class_names'"),
        ("missing_rate", "missing attribute 'pose_rate_hz'"),
        ("zero_rate", "neural_rate_hz is 0.0"),
        ("frames_dtype", "neural frames have dtype int64"),
    ],
)
def test_open_rejects_broken_files(tmp_path: Path, how: str, message: str, make_arrays: Callable[..., dict]) -> None:
    path = write_trial(tmp_path / "broken.h5", **make_arrays())
    _corrupt(path, how)
    with pytest.raises(RecordingError, match=message) as info:
        open_trial(path)
    assert str(path) in str(info.value)


def test_open_rejects_non_hdf5_and_missing(tmp_path: Path, make_arrays: Callable[..., dict]) -> None:
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(RecordingError, match="not a readable HDF5 file"):
        open_trial(text)
    truncated = tmp_path / "truncated.h5"
    good = write_trial(tmp_path / "good.h5", **make_arrays())
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(RecordingError, match="truncated.h5"):
        open_trial(truncated)
    with pytest.raises(RecordingError, match="does not exist"):
        open_trial(tmp_path / "absent.h5")


def test_random_corruption_gives_recording_error_or_a_valid_trial(tmp_path: Path,
                                                                   make_arrays: Callable[..., dict]) -> None:
    """Flipped bytes anywhere in a file: never a crash of another kind, never silently wrong frames."""
    good = write_trial(tmp_path / "good.h5", **make_arrays(n_neural=20))
    data = good.read_bytes()
    with open_trial(good, in_memory=True) as t:
        frames = np.asarray(t.neural)
    rng = np.random.default_rng(0)
    outcomes = {"error": 0, "ok": 0}
    for i in range(80):
        corrupt = bytearray(data)
        for pos in rng.integers(0, len(data), rng.integers(1, 12)):
            corrupt[pos] ^= int(rng.integers(1, 256))
        path = tmp_path / f"corrupt{i}.h5"
        path.write_bytes(bytes(corrupt))
        try:
            with open_trial(path, in_memory=True) as t:
                np.testing.assert_array_equal(t.neural, frames)  # checksummed: intact if it opens
            outcomes["ok"] += 1
        except RecordingError as exc:
            assert str(path) in str(exc)
            outcomes["error"] += 1
        path.unlink()
    assert outcomes["error"] > 40  # most flips land in checked data or metadata


def test_corrupted_frame_chunk_is_detected(tmp_path: Path, make_arrays: Callable[..., dict]) -> None:
    from trainer.data.windows import WindowDataset

    path = write_trial(tmp_path / "a.h5", **make_arrays(n_neural=40))
    with h5py.File(path) as f:
        info = f["neural/frames"].id.get_chunk_info(1)  # frames 8..15
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    ds = WindowDataset([path], window=4)  # metadata, pose and labels are intact: opens fine
    ds[0]  # frames 0..3 live in an intact chunk
    with pytest.raises(RecordingError, match=r"a\.h5: cannot read neural frames 7\.\.10"):
        ds[7]
    ds.close()
    with pytest.raises(RecordingError, match="a.h5: unreadable content"):
        open_trial(path, in_memory=True)
