"""`import numpy` keeps what the file says: recorded timestamps, its class and joint names, and
refuses (or announces) what it would otherwise have to guess (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tools.cli import main
from trainer.data.importers import ImportAssumptionWarning, import_numpy
from trainer.data.names import parse_names
from trainer.data.recording import RecordingError, open_trial, rate_from_times
from trainer.data.schema import ACTION_NAMES, JOINT_NAMES

SIX = ["walk", "turn", "rest", "groom_front", "groom_hind", "push"]


def _stamps(n: int, rate: float, start: float, seed: int) -> np.ndarray:
    """Timestamps as acquisition software writes them: jittered, rounded to 10 ms (frames) or 1 ms (pose)."""
    rng = np.random.default_rng(seed)
    decimals = 2 if rate < 50 else 3
    return np.round(start + np.arange(n) / rate + rng.normal(0, 0.2 / rate / 10, n), decimals)


def _dataset(n_joints: int = 38, seed: int = 0) -> dict[str, np.ndarray]:
    """The reported dataset in small: 15 Hz frames, 100 Hz pose, six integer action labels."""
    rng = np.random.default_rng(seed)
    return dict(
        neural=rng.integers(0, 4000, (150, 6, 7)).astype(np.uint16),
        pose=rng.normal(size=(1000, n_joints, 3)).astype(np.float32),
        labels=rng.integers(0, 6, 1000),
    )


@pytest.mark.parametrize(("neural_key", "pose_key"), [("neural_t", "pose_t"), ("neural_times", "pose_times"),
                                                      ("neural_timestamps", "pose_timestamps")])
def test_npz_timestamps_are_read_under_the_names_users_have(tmp_path: Path, neural_key: str, pose_key: str) -> None:
    arrays = _dataset()
    n_t, p_t = _stamps(150, 15.0, 12.34, 1), _stamps(1000, 100.0, 12.30, 2)
    np.savez(tmp_path / "trial.npz", **arrays, **{neural_key: n_t, pose_key: p_t}, class_names=SIX)
    with pytest.warns(ImportAssumptionWarning, match="DeepFly3D layout"):
        path = import_numpy(tmp_path / "t.h5", animal_id="m1", trial_id="s1", npz=tmp_path / "trial.npz")
    with open_trial(path) as t:
        np.testing.assert_array_equal(t.neural_times, n_t)
        np.testing.assert_array_equal(t.pose_times, p_t)
        assert t.neural_rate_hz == pytest.approx(15.0, rel=1e-3)
        assert t.pose_rate_hz == pytest.approx(100.0, rel=1e-3)
        assert t.class_names == SIX
        assert t.attrs["neural_times"] == f"'{neural_key}'"


def test_missing_timestamps_error_lists_keys_looked_for_and_found(tmp_path: Path) -> None:
    arrays = _dataset()
    np.savez(tmp_path / "trial.npz", **arrays, pose_t=np.arange(1000) / 100.0, frame_clock=np.arange(150) / 15)
    with pytest.raises(RecordingError) as info:
        import_numpy(tmp_path / "t.h5", animal_id="m1", trial_id="s1", npz=tmp_path / "trial.npz",
                     class_names=SIX)
    message = str(info.value)
    assert "trial.npz: no neural timestamps" in message
    assert "looked for neural_times, neural_t, neural_timestamps" in message
    assert "it holds frame_clock, labels, neural, pose, pose_t" in message
    assert "--neural-rate" in message
    np.savez(tmp_path / "both.npz", **arrays, neural_times=np.arange(150) / 15, neural_t=np.arange(150) / 15,
             pose_t=np.arange(1000) / 100.0)
    with pytest.raises(RecordingError, match="both.npz: holds both 'neural_times' and 'neural_t'; keep one"):
        import_numpy(tmp_path / "t.h5", animal_id="m1", trial_id="s1", npz=tmp_path / "both.npz", class_names=SIX)
    assert not (tmp_path / "t.h5").exists()


def test_a_stated_rate_is_checked_against_timestamps_and_never_replaces_them(tmp_path: Path) -> None:
    arrays = _dataset()
    n_t, p_t = _stamps(150, 15.0, 7.5, 1), _stamps(1000, 100.0, 7.5, 2)
    np.savez(tmp_path / "trial.npz", **arrays, neural_t=n_t, pose_t=p_t, class_names=SIX)
    with pytest.warns(ImportAssumptionWarning):
        path = import_numpy(tmp_path / "ok.h5", animal_id="m1", trial_id="s1", npz=tmp_path / "trial.npz",
                            neural_rate_hz=15.0, pose_rate_hz=100.0)
    with open_trial(path) as t:
        np.testing.assert_array_equal(t.neural_times, n_t)  # recorded, not a clock from 0 s
        np.testing.assert_array_equal(t.pose_times, p_t)
        assert t.neural_rate_hz == 15.0
    with pytest.raises(RecordingError, match=r"--neural-rate 16 Hz disagrees with the timestamps in 'neural_t' "
                                             r"\(1[45]\.\d{4} Hz, 6\.\d % off; tolerance 0\.5 %\)"):
        import_numpy(tmp_path / "bad.h5", animal_id="m1", trial_id="s1", npz=tmp_path / "trial.npz",
                     neural_rate_hz=16.0)
    assert not (tmp_path / "bad.h5").exists()


def test_rate_from_timestamps_rounded_to_10_ms(tmp_path: Path) -> None:
    stamps = _stamps(150, 15.0, 0.0, 3)
    assert 1 / np.median(np.diff(stamps)) == pytest.approx(14.286, abs=1e-3)  # what the old estimate gave
    assert rate_from_times(stamps) == pytest.approx(15.0, rel=1e-3)
    assert rate_from_times(np.delete(stamps, [40, 41, 90])) == pytest.approx(15.0, rel=1e-3)  # dropped frames
    arrays = _dataset()
    np.savez(tmp_path / "trial.npz", **arrays, neural_t=stamps, pose_t=_stamps(1000, 100.0, 0.0, 4),
             class_names=SIX, joint_names=list(JOINT_NAMES))
    path = import_numpy(tmp_path / "t.h5", animal_id="m1", trial_id="s1", npz=tmp_path / "trial.npz")
    with open_trial(path) as t:
        assert t.neural_rate_hz == pytest.approx(15.0, rel=1e-3)
        assert t.pose_rate_hz == pytest.approx(100.0, rel=1e-3)


def test_labels_without_class_names_are_refused(tmp_path: Path) -> None:
    arrays = _dataset()
    np.savez(tmp_path / "trial.npz", **arrays, joint_names=list(JOINT_NAMES))
    with pytest.raises(RecordingError) as info:
        import_numpy(tmp_path / "t.h5", animal_id="m1", trial_id="s1", npz=tmp_path / "trial.npz",
                     neural_rate_hz=15, pose_rate_hz=100)
    message = str(info.value)
    assert "trial.npz: labels (0..5) but no class names" in message
    assert "--class-names names.json" in message and "--class-names default" in message
    with pytest.raises(RecordingError, match=r"labels run 0\.\.5 but 4 class names"):
        import_numpy(tmp_path / "t.h5", animal_id="m1", trial_id="s1", npz=tmp_path / "trial.npz",
                     neural_rate_hz=15, pose_rate_hz=100, class_names=SIX[:4])
    np.savez(tmp_path / "named.npz", **arrays, joint_names=list(JOINT_NAMES), class_names=SIX)
    with pytest.raises(RecordingError, match=r"'class_names' in the file \['walk'.*differ from --class-names"):
        import_numpy(tmp_path / "t.h5", animal_id="m1", trial_id="s1", npz=tmp_path / "named.npz",
                     neural_rate_hz=15, pose_rate_hz=100, class_names=list(ACTION_NAMES)[:6])
    assert not (tmp_path / "t.h5").exists()


def test_cli_class_names_from_a_json_file(tmp_path: Path) -> None:
    arrays = _dataset()
    np.savez(tmp_path / "trial.npz", **arrays, neural_t=_stamps(150, 15.0, 0, 1), pose_t=_stamps(1000, 100, 0, 2))
    (tmp_path / "actions.json").write_text(json.dumps({str(i): n for i, n in enumerate(SIX)}))
    base = ["import", "numpy", "--npz", str(tmp_path / "trial.npz"), "--animal", "m1", "--trial", "s1"]
    assert main([*base, "--out", str(tmp_path / "none.h5")]) == 1  # no class names: refused
    assert not (tmp_path / "none.h5").exists()
    assert main([*base, "--class-names", str(tmp_path / "actions.json"), "--out", str(tmp_path / "t.h5")]) == 0
    with open_trial(tmp_path / "t.h5") as t:
        assert t.class_names == SIX
        np.testing.assert_array_equal(t.labels, arrays["labels"])
        assert t.joint_names == list(JOINT_NAMES)  # assumed, with a warning in the log
    assert main([*base, "--class-names", "default", "--out", str(tmp_path / "fly.h5")]) == 0
    with open_trial(tmp_path / "fly.h5") as t:
        assert t.class_names == list(ACTION_NAMES)


@pytest.mark.parametrize("content", [
    SIX, {str(i): n for i, n in reversed(list(enumerate(SIX)))}, {n: i for i, n in enumerate(SIX)},
    {"class_names": SIX, "fps": 15}, {"actions": {n: i for i, n in enumerate(SIX)}},
])
def test_names_json_forms(tmp_path: Path, content: object) -> None:
    (tmp_path / "n.json").write_text(json.dumps(content))
    assert parse_names(str(tmp_path / "n.json"), "class names") == SIX


@pytest.mark.parametrize(("content", "message"), [
    ("{", "n.json: not a readable JSON file of class names"),
    (json.dumps({"0": "a", "2": "b"}), r"indices are \[0, 2\], expected 0\.\.1"),
    (json.dumps([1, 2]), "expected class names as a JSON list of strings"),
    (json.dumps(["a", "a"]), "class names repeat a"),
])
def test_bad_names_json(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "n.json").write_text(content)
    with pytest.raises(RecordingError, match=message):
        parse_names(str(tmp_path / "n.json"), "class names")
    with pytest.raises(ValueError, match="every name must be a non-empty string"):
        parse_names("a,,b", "class names")


def test_joint_layout_is_announced_or_refused(tmp_path: Path) -> None:
    arrays = _dataset(n_joints=12)
    np.savez(tmp_path / "trial.npz", **arrays, class_names=SIX)
    with pytest.raises(RecordingError) as info:
        import_numpy(tmp_path / "t.h5", animal_id="m1", trial_id="s1", npz=tmp_path / "trial.npz",
                     neural_rate_hz=15, pose_rate_hz=100)
    assert "pose has 12 joints and no joint names" in str(info.value)
    assert "DeepFly3D layout (38 joints)" in str(info.value) and "--joint-names" in str(info.value)
    with pytest.raises(RecordingError, match="pose has 12 joints but 3 joint names"):
        import_numpy(tmp_path / "t.h5", animal_id="m1", trial_id="s1", npz=tmp_path / "trial.npz",
                     neural_rate_hz=15, pose_rate_hz=100, joint_names=["a", "b", "c"])
    joints = [f"j{i}" for i in range(12)]
    assert main(["import", "numpy", "--npz", str(tmp_path / "trial.npz"), "--neural-rate", "15", "--pose-rate", "100",
                 "--joint-names", ",".join(joints), "--animal", "m", "--trial", "t", "--out", str(tmp_path)]) == 0
    with open_trial(tmp_path / "m_t.h5") as t:
        assert t.joint_names == joints


def test_npy_route_takes_timestamps_and_class_names(tmp_path: Path) -> None:
    arrays = _dataset()
    n_t, p_t = _stamps(150, 15.0, 3.0, 1), _stamps(1000, 100.0, 3.0, 2)
    for name, arr in (("n", arrays["neural"]), ("p", arrays["pose"]), ("l", arrays["labels"]), ("nt", n_t), ("pt", p_t)):
        np.save(tmp_path / f"{name}.npy", arr)
    base = ["import", "numpy", "--neural", str(tmp_path / "n.npy"), "--pose", str(tmp_path / "p.npy"),
            "--labels", str(tmp_path / "l.npy"), "--animal", "a", "--trial", "t"]
    assert main([*base, "--class-names", ",".join(SIX), "--out", str(tmp_path / "norate.h5")]) == 1
    assert main([*base, "--neural-times", str(tmp_path / "nt.npy"), "--pose-times", str(tmp_path / "pt.npy"),
                 "--class-names", ",".join(SIX), "--out", str(tmp_path / "ok.h5")]) == 0
    with open_trial(tmp_path / "ok.h5") as t:
        np.testing.assert_array_equal(t.neural_times, n_t)
        np.testing.assert_array_equal(t.pose_times, p_t)
        assert t.class_names == SIX and t.neural_rate_hz == pytest.approx(15.0, rel=1e-3)
    assert main([*base, "--neural-rate", "15", "--neural-start", "0.25", "--pose-times", str(tmp_path / "pt.npy"),
                 "--class-names", ",".join(SIX), "--out", str(tmp_path / "rate.h5")]) == 0
    with open_trial(tmp_path / "rate.h5") as t:
        np.testing.assert_allclose(t.neural_times, 0.25 + np.arange(150) / 15.0)
        np.testing.assert_array_equal(t.pose_times, p_t)
    with pytest.raises(RecordingError, match="--pose-start given, but the pose timestamps in .*pt.npy say when"):
        import_numpy(tmp_path / "x.h5", animal_id="a", trial_id="t", neural=tmp_path / "n.npy",
                     pose=tmp_path / "p.npy", neural_rate_hz=15, pose_times=tmp_path / "pt.npy", pose_start_s=1.0)
    np.savez(tmp_path / "lab.npz", **arrays, neural_t=n_t, pose_t=p_t, class_names=SIX)
    with pytest.raises(RecordingError, match="lab.npz: holds 'labels' and --labels .*l.npy was given too"):
        import_numpy(tmp_path / "x.h5", animal_id="a", trial_id="t", npz=tmp_path / "lab.npz",
                     labels=tmp_path / "l.npy")
    with pytest.raises(RecordingError, match="pass --neural-times FILE.npy"):
        import_numpy(tmp_path / "x.h5", animal_id="a", trial_id="t", neural=tmp_path / "n.npy",
                     pose=tmp_path / "p.npy", pose_times=tmp_path / "pt.npy")
    with pytest.raises(RecordingError, match=r"pt\.npy has shape \(1000,\).*expected 150 numbers"):
        import_numpy(tmp_path / "x.h5", animal_id="a", trial_id="t", neural=tmp_path / "n.npy",
                     pose=tmp_path / "p.npy", neural_times=tmp_path / "pt.npy", pose_times=tmp_path / "pt.npy")
