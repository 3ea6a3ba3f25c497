"""`import nwb`: files written by pynwb itself (good and broken) import exactly or fail with a
message that names the file and the problem; a small NWB dataset of three animals trains."""

from __future__ import annotations

import functools
import importlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest


# The nwb extra is installed by `make install` (CI too): there a missing package fails the run.
_require = importlib.import_module if os.environ.get("CI") else functools.partial(
    pytest.importorskip, reason="the nwb extra is not installed (pip install -e '.[nwb]')")


pynwb = _require("pynwb")
ndx_pose = _require("ndx_pose")

from pynwb.epoch import TimeIntervals  # noqa: E402
from pynwb.file import Subject  # noqa: E402
from pynwb.image import ImageSeries  # noqa: E402
from pynwb.ophys import OpticalChannel, TwoPhotonSeries  # noqa: E402

from tools.cli import main  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.data.importers import ImportAssumptionWarning  # noqa: E402
from trainer.data.nwb import import_nwb  # noqa: E402
from trainer.data.recording import RecordingError, list_trials, open_trial  # noqa: E402
from trainer.train import train  # noqa: E402

JOINTS = ["head", "thorax", "RF_ThC", "RF_Claw"]
ACTIONS = ["walk", "rest", "groom"]


def _nwbfile(subject: str | None = "fly1", session: str | None = "s1") -> Any:
    return pynwb.NWBFile(session_description="test session", identifier=f"{subject}-{session}",
                         session_start_time=datetime(2026, 12, 1, tzinfo=timezone.utc), session_id=session,
                         subject=Subject(subject_id=subject, species="Drosophila melanogaster") if subject else None)


def _add_two_photon(nwb: Any, frames_xy: np.ndarray, *, name: str = "TwoPhotonSeries", plane: str = "plane0",
                    rate: float | None = 15.0, timestamps: np.ndarray | None = None, start: float = 0.0) -> None:
    device = nwb.devices.get("microscope") or nwb.create_device(name="microscope")
    imaging_plane = nwb.create_imaging_plane(
        name=plane, optical_channel=OpticalChannel(name="green", description="GCaMP", emission_lambda=520.0),
        description="cervical connective", device=device, excitation_lambda=920.0, indicator="GCaMP6s",
        location="VNC", imaging_rate=rate or 15.0)
    clock = {"timestamps": timestamps} if timestamps is not None else {"rate": rate, "starting_time": start}
    nwb.add_acquisition(TwoPhotonSeries(name=name, data=frames_xy, imaging_plane=imaging_plane, unit="n.a.", **clock))


def _add_pose(nwb: Any, points: np.ndarray, times: np.ndarray, *, joints: list[str] = JOINTS, unit: str = "mm",
              name: str = "PoseEstimation", per_joint_times: dict[str, np.ndarray] | None = None,
              lengths: dict[str, int] | None = None) -> None:
    from ndx_pose import PoseEstimation, PoseEstimationSeries, Skeleton, Skeletons

    skeleton = Skeleton(name=f"{name}_skeleton", nodes=joints,
                        edges=np.array([[i, i + 1] for i in range(len(joints) - 1)], dtype="uint8"))
    n = {j: (lengths or {}).get(j, len(points)) for j in joints}
    series = [PoseEstimationSeries(name=j, data=points[: n[j], i], unit=unit, reference_frame="tether",
                                   timestamps=(per_joint_times or {}).get(j, times)[: n[j]],
                                   confidence=np.ones(n[j]), confidence_definition="all trusted")
              for i, j in enumerate(joints)]
    behavior = nwb.processing.get("behavior") or nwb.create_processing_module(name="behavior", description="pose")
    behavior.add(Skeletons(name=f"{name}_skeletons", skeletons=[skeleton]))
    behavior.add(PoseEstimation(name=name, pose_estimation_series=series, skeleton=skeleton,
                                description="3-D pose", source_software="DeepFly3D"))


def _add_labels(nwb: Any, bouts: list[tuple[float, float, Any]], *, name: str = "actions", column: str = "label") -> None:
    table = TimeIntervals(name=name, description="annotated actions")
    table.add_column(name=column, description="action name")
    for start, stop, label in bouts:
        table.add_interval(start_time=start, stop_time=stop, **{column: label})
    nwb.add_time_intervals(table)


def _write(nwb: Any, path: Path) -> Path:
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def _good(tmp_path: Path, **kw: Any) -> tuple[Path, dict[str, Any]]:
    """A complete session: 45 frames of 6 x 8 (x, y) at 15 Hz from 0.5 s, 3-D pose at 100 Hz, three bouts."""
    rng = np.random.default_rng(0)
    frames_xy = rng.integers(0, 4000, (45, 6, 8)).astype(np.uint16)
    pose_times = 0.45 + np.arange(320) / 100.0
    points = rng.normal(size=(320, len(JOINTS), 3))
    nwb = _nwbfile()
    _add_two_photon(nwb, frames_xy, start=0.5)
    _add_pose(nwb, points, pose_times)
    _add_labels(nwb, [(0.45, 1.0, "walk"), (1.0, 2.0, "rest"), (2.5, 3.0, "groom")])
    return _write(nwb, tmp_path / kw.get("name", "session.nwb")), dict(frames_xy=frames_xy, points=points,
                                                                       pose_times=pose_times)


def test_nwb_round_trip(tmp_path: Path) -> None:
    src, truth = _good(tmp_path)
    out = tmp_path / "ds"
    out.mkdir()
    path = import_nwb(src, out, class_names=ACTIONS)
    assert path == out / "fly1_s1.h5"
    with open_trial(path) as t:
        np.testing.assert_array_equal(t.neural[()], truth["frames_xy"].transpose(0, 2, 1))  # rows x columns
        np.testing.assert_allclose(t.neural_times, 0.5 + np.arange(45) / 15.0)
        assert t.neural_rate_hz == 15.0
        np.testing.assert_array_equal(t.pose, truth["points"].astype(np.float32))
        np.testing.assert_array_equal(t.pose_times, truth["pose_times"])
        assert t.joint_names == JOINTS and t.class_names == ACTIONS
        pt = truth["pose_times"]
        expected = np.full(len(pt), -1)
        expected[(pt >= 0.45) & (pt < 1.0)] = 0
        expected[(pt >= 1.0) & (pt < 2.0)] = 1
        expected[(pt >= 2.5) & (pt < 3.0)] = 2
        np.testing.assert_array_equal(t.labels, expected)
        assert t.attrs["source"] == "nwb" and t.attrs["imaging"] == "TwoPhotonSeries"


def test_cli_import_nwb_names_from_the_file(tmp_path: Path) -> None:
    src, _ = _good(tmp_path)
    (tmp_path / "actions.json").write_text('["walk", "rest", "groom"]')
    argv = ["import", "nwb", str(src), "--class-names", str(tmp_path / "actions.json"), "--out", str(tmp_path)]
    assert main(argv) == 0
    with open_trial(tmp_path / "fly1_s1.h5") as t:
        assert t.animal_id == "fly1" and t.trial_id == "s1" and t.class_names == ACTIONS
    assert main(argv) == 1  # exists
    assert main([*argv, "--force", "--animal", "a9", "--trial", "t3"]) == 0
    assert (tmp_path / "a9_t3.h5").is_file()


def test_several_files_share_one_class_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    sources = []
    for k, bouts in enumerate([[(0.0, 1.0, "walk"), (1.0, 2.0, "rest")], [(0.0, 1.0, "groom"), (1.0, 2.0, "walk")]]):
        nwb = _nwbfile(subject=f"fly{k}")
        _add_two_photon(nwb, rng.integers(0, 100, (30, 4, 4)).astype(np.uint16))
        _add_pose(nwb, rng.normal(size=(300, 4, 3)), np.arange(300) / 100.0)
        _add_labels(nwb, bouts)
        sources.append(_write(nwb, tmp_path / f"fly{k}.nwb"))
    assert main(["import", "nwb", *map(str, sources), "--out", str(tmp_path)]) == 0
    for k, first in enumerate(["walk", "groom"]):
        with open_trial(tmp_path / f"fly{k}_s1.h5") as t:
            assert t.class_names == ["groom", "rest", "walk"]  # the union, not each file's own
            assert t.class_names[t.labels[0]] == first


def test_timestamps_two_d_pose_units_and_integer_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    stamps = np.round(np.arange(40) / 15.0 + rng.normal(0, 0.001, 40), 2) + 10.0
    nwb = _nwbfile()
    _add_two_photon(nwb, rng.random((40, 5, 5)).astype(np.float64), rate=None, timestamps=stamps)
    points = rng.normal(size=(300, 2, 2))
    _add_pose(nwb, points, 10.0 + np.arange(300) / 100.0, joints=["nose", "tail"], unit="meters")
    _add_labels(nwb, [(10.0, 11.0, 1), (11.0, 12.0, 0)], name="bouts", column="action")
    src = _write(nwb, tmp_path / "s.nwb")
    with pytest.raises(RecordingError, match="table 'bouts' column 'action' holds class indices but no class names"), \
            pytest.warns(ImportAssumptionWarning):
        import_nwb(src, tmp_path / "x.h5")
    with pytest.warns(ImportAssumptionWarning, match="is 2-D; stored with z = 0"):
        path = import_nwb(src, tmp_path / "t.h5", class_names=["a", "b"])
    with open_trial(path) as t:
        assert t.frame_dtype == np.float32
        np.testing.assert_array_equal(t.neural_times, stamps)
        assert t.neural_rate_hz == pytest.approx(15.0, rel=1e-3)
        np.testing.assert_allclose(t.pose[..., :2], points * 1000.0, rtol=1e-6)  # metres -> mm
        assert not t.pose[..., 2].any()
        assert t.joint_names == ["nose", "tail"]
        assert (t.labels[:100] == 1).all() and (t.labels[100:200] == 0).all() and (t.labels[200:] == -1).all()


def test_the_imaging_plane_is_chosen_by_name(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    nwb = _nwbfile()
    planes = {}
    for k in range(2):
        planes[k] = rng.integers(0, 100, (20, 4, 4)).astype(np.uint16)
        _add_two_photon(nwb, planes[k], name=f"TwoPhotonSeries{k}", plane=f"plane{k}")
    _add_pose(nwb, rng.normal(size=(150, 4, 3)), np.arange(150) / 100.0)
    nwb.add_acquisition(ImageSeries(name="camera", data=np.zeros((5, 3, 3), np.uint8), unit="n.a.", rate=30.0))
    src = _write(nwb, tmp_path / "two.nwb")
    with pytest.raises(RecordingError, match=r"2 candidates for the imaging series \('TwoPhotonSeries0', 'TwoPhotonSeries1'\); "
                                             r"choose one by name \(--imaging NAME\)"):
        import_nwb(src, tmp_path / "x.h5")
    with pytest.raises(RecordingError, match=r"no imaging series named 'plane7'; the file has: 'TwoPhotonSeries0' "
                                             r"\(plane 'plane0'\)"):
        import_nwb(src, tmp_path / "x.h5", imaging="plane7")
    path = import_nwb(src, tmp_path / "p1.h5", imaging="plane1")
    with open_trial(path) as t:
        np.testing.assert_array_equal(t.neural[()], planes[1].transpose(0, 2, 1))
        assert t.labels is None


def _add_epochs(nwb: Any, events: dict[str, list[tuple[float, int]]]) -> None:
    from pynwb.behavior import BehavioralEpochs
    from pynwb.misc import IntervalSeries

    epochs = BehavioralEpochs(name="behavior_epochs")
    for action, marks in events.items():
        epochs.add_interval_series(IntervalSeries(name=action, data=np.array([v for _, v in marks], dtype=np.int8),
                                                  timestamps=np.array([t for t, _ in marks])))
    module = nwb.processing.get("behavior") or nwb.create_processing_module(name="behavior", description="pose")
    module.add(epochs)


def test_labels_from_behavioral_epochs(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    nwb = _nwbfile()
    _add_two_photon(nwb, rng.integers(0, 100, (30, 4, 4)).astype(np.uint16))
    times = np.arange(300) / 100.0
    _add_pose(nwb, rng.normal(size=(300, 4, 3)), times)
    _add_epochs(nwb, {"walk": [(0.0, 1), (1.0, -1), (2.0, 1), (2.5, -1)], "rest": [(1.0, 1), (1.5, -1)]})
    src = _write(nwb, tmp_path / "epochs.nwb")
    path = import_nwb(src, tmp_path / "t.h5", class_names=["rest", "walk"])
    with open_trial(path) as t:
        expected = np.full(300, -1)
        expected[:100], expected[100:150], expected[200:250] = 1, 0, 1
        np.testing.assert_array_equal(t.labels, expected)
        assert t.attrs["labels"] == "BehavioralEpochs behavior_epochs"
    nwb = _nwbfile()
    _add_two_photon(nwb, rng.integers(0, 100, (30, 4, 4)).astype(np.uint16))
    _add_pose(nwb, rng.normal(size=(300, 4, 3)), times)
    _add_epochs(nwb, {"walk": [(0.0, 1), (1.0, -1), (2.0, 1)]})
    src = _write(nwb, tmp_path / "open.nwb")
    with pytest.raises(RecordingError, match="IntervalSeries 'walk' of BehavioralEpochs 'behavior_epochs': the "
                                             "interval from 2 s never ends"):
        import_nwb(src, tmp_path / "x.h5", class_names=["walk"])
    _add_labels(nwb := _nwbfile(), [(0.0, 1.0, "walk")])
    _add_two_photon(nwb, rng.integers(0, 100, (30, 4, 4)).astype(np.uint16))
    _add_pose(nwb, rng.normal(size=(300, 4, 3)), times)
    _add_epochs(nwb, {"walk": [(0.0, 1), (1.0, -1)]})
    src = _write(nwb, tmp_path / "both.nwb")
    with pytest.raises(RecordingError, match=r"2 label sources \(TimeIntervals 'actions', BehavioralEpochs "
                                             r"'behavior_epochs'\); choose one \(--labels NAME\)"):
        import_nwb(src, tmp_path / "x.h5", class_names=["walk"])
    assert import_nwb(src, tmp_path / "x.h5", class_names=["walk"], labels="behavior_epochs").is_file()


def _broken(tmp_path: Path, what: str) -> Path:
    rng = np.random.default_rng(3)
    nwb = _nwbfile(subject=None if what == "no subject" else "fly1")
    frames = rng.integers(0, 100, (30, 4, 4)).astype(np.uint16)
    times = np.arange(300) / 100.0
    points = rng.normal(size=(300, 4, 3))
    if what != "no imaging":
        _add_two_photon(nwb, frames, **({"rate": None, "timestamps": np.arange(30) / 15.0}
                                        if what == "frame timestamps" else {}))
    if what == "joint clocks":
        _add_pose(nwb, points, times, per_joint_times={"RF_Claw": times + 0.004})
    elif what == "joint lengths":
        _add_pose(nwb, points, times, lengths={"RF_Claw": 299})
    elif what != "no pose":
        _add_pose(nwb, points, times)
    if what == "unknown label":
        _add_labels(nwb, [(0.0, 1.0, "walk"), (1.0, 2.0, "fly")])
    elif what == "overlap":
        _add_labels(nwb, [(0.0, 1.5, "walk"), (1.0, 2.0, "rest")])
    elif what == "nested overlap":
        _add_labels(nwb, [(0.0, 2.5, "walk"), (0.5, 1.0, "walk"), (1.5, 2.0, "rest")])
    elif what == "other clock":
        _add_labels(nwb, [(100.0, 101.0, "walk")])
    elif what == "no label column":
        _add_labels(nwb, [(0.0, 1.0, "walk")], name="scored", column="score")
    path = _write(nwb, tmp_path / f"{what.replace(' ', '_')}.nwb")
    if what == "frame timestamps":  # pynwb will not write this; other writers do: one timestamp lost
        import h5py

        with h5py.File(path, "r+") as f:
            ds = f["acquisition/TwoPhotonSeries/timestamps"]
            attrs, short = dict(ds.attrs), ds[:29]
            del f["acquisition/TwoPhotonSeries/timestamps"]
            f.create_dataset("acquisition/TwoPhotonSeries/timestamps", data=short).attrs.update(attrs)
    return path


@pytest.mark.parametrize(("what", "kwargs", "message"), [
    ("no imaging", {}, r"no imaging data: no TwoPhotonSeries, OnePhotonSeries or ImageSeries in the file "
                       r"\(it holds .*PoseEstimation 'PoseEstimation'"),
    ("no pose", {}, "no pose: no ndx-pose PoseEstimation in the file"),
    ("frame timestamps", {}, r"not a readable NWB file \(ConstructError: Could not construct TwoPhotonSeries object "
                             "due to: TwoPhotonSeries 'TwoPhotonSeries': Length of data does not match length of "
                             r"timestamps\. Your data may be transposed\. Time should be on the 0th dimension\)$"),
    ("joint lengths", {}, "pose series 'RF_Claw' has 299 samples but 'head' has 300; every joint must share one clock"),
    ("joint clocks", {}, r"pose series 'RF_Claw' timestamps differ from 'head''s by up to 0\.004 s"),
    ("unknown label", {"class_names": ["walk", "rest"]},
     r"table 'actions' column 'label' has unknown label names \['fly'\] \(rows 1\); class names: walk, rest"),
    ("overlap", {"class_names": ["walk", "rest"]}, r"table 'actions' rows 0 and 1 overlap \(1-1\.5 s\)"),
    ("nested overlap", {"class_names": ["walk", "rest"]}, r"table 'actions' rows 0 and 2 overlap \(1\.5-2 s\)"),
    ("other clock", {"class_names": ["walk"]}, r"no interval of table 'actions' \(100-101 s\) covers a pose sample"),
    ("no label column", {"labels": "scored"}, r"table 'scored' has no label column label / labels"),
    ("no subject", {}, r"no subject_id in the file's Subject; pass the animal id \(--animal\)"),
])
def test_broken_nwb_files(tmp_path: Path, what: str, kwargs: dict[str, Any], message: str) -> None:
    src = _broken(tmp_path, what)
    with pytest.raises(RecordingError, match=message) as info:
        import_nwb(src, tmp_path / "out.h5", **kwargs)
    assert str(info.value).startswith(str(src))
    assert not list(tmp_path.glob("*.h5")) and not list(tmp_path.glob(".*.tmp"))


def test_frames_are_copied_a_block_at_a_time(tmp_path: Path) -> None:
    import tracemalloc

    rng = np.random.default_rng(4)
    movie = rng.integers(0, 4000, (800, 64, 64)).astype(np.uint16)  # 6.6 MB
    nwb = _nwbfile()
    _add_two_photon(nwb, movie)
    _add_pose(nwb, rng.normal(size=(100, 4, 3)), np.arange(100) / 2.0)
    src = _write(nwb, tmp_path / "movie.nwb")
    del movie, nwb
    tracemalloc.start()
    try:
        path = import_nwb(src, tmp_path / "m.h5")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3_000_000, f"import held {peak / 1e6:.1f} MB at once for a 6.6 MB movie"
    with open_trial(path) as t:
        assert t.frame_shape == (64, 64) and t.n_neural == 800


def test_three_d_pose_of_several_cameras(tmp_path: Path) -> None:
    """A MultiCameraPoseEstimation (3-D, with a 2-D PoseEstimation per camera inside) is read as
    the one pose; the per-camera 2-D estimates are not candidates."""
    from ndx_pose.testing.mock.pose import mock_MultiCameraPoseEstimation

    nwb = _nwbfile()
    _add_two_photon(nwb, np.ones((20, 4, 4), np.uint16))
    multi = mock_MultiCameraPoseEstimation(nwbfile=nwb)
    src = _write(nwb, tmp_path / "multi.nwb")
    path = import_nwb(src, tmp_path / "t.h5")
    with open_trial(path) as t:
        assert t.joint_names == list(multi.skeleton.nodes)
        first = multi.pose_estimation_series[t.joint_names[0]]
        np.testing.assert_allclose(t.pose[:, 0], first.data[:], rtol=1e-6)  # millimetres, kept
        np.testing.assert_allclose(t.pose_times, first.timestamps[:])
        assert t.attrs["pose"] == multi.name


def test_frames_in_external_files_are_refused(tmp_path: Path) -> None:
    nwb = _nwbfile()
    nwb.add_acquisition(ImageSeries(name="scan", external_file=["scan_00001.tif"], format="external",
                                    starting_frame=[0], rate=15.0, num_samples=100, unit="n.a."))
    _add_pose(nwb, np.zeros((10, 4, 3)), np.arange(10) / 10.0)
    src = _write(nwb, tmp_path / "ext.nwb")
    with pytest.raises(RecordingError, match=r"'scan' keeps its frames in external files \(scan_00001\.tif\); "
                                             "import those with `actionloop import tiff`"):
        import_nwb(src, tmp_path / "x.h5")


def test_not_nwb(tmp_path: Path) -> None:
    junk = tmp_path / "junk.nwb"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(RecordingError, match="junk.nwb: not a readable NWB file"):
        import_nwb(junk, tmp_path / "x.h5")
    with pytest.raises(RecordingError, match="absent.nwb: NWB file does not exist"):
        import_nwb(tmp_path / "absent.nwb", tmp_path / "x.h5")


def _to_nwb(trial_path: Path, out: Path) -> Path:
    """A trial of the trainer's synthetic dataset rewritten as the NWB session a lab would have."""
    with open_trial(trial_path, in_memory=True) as t:
        nwb = _nwbfile(subject=t.animal_id, session=t.trial_id)
        _add_two_photon(nwb, np.asarray(t.neural).transpose(0, 2, 1), rate=t.neural_rate_hz,
                        start=float(t.neural_times[0]))
        _add_pose(nwb, t.pose, t.pose_times, joints=t.joint_names)
        labels = t.labels
        edges = np.flatnonzero(np.diff(labels)) + 1
        starts, stops = np.r_[0, edges], np.r_[edges, len(labels)]
        dt = 1.0 / t.pose_rate_hz
        _add_labels(nwb, [(float(t.pose_times[a]), float(t.pose_times[b - 1] + dt), t.class_names[labels[a]])
                          for a, b in zip(starts, stops)])
        return _write(nwb, out / f"{trial_path.stem}.nwb")


def test_a_small_nwb_dataset_imports_and_trains(tmp_path: Path, write_dataset, fast_overrides: list[str]) -> None:  # type: ignore[no-untyped-def]
    originals = write_dataset(tmp_path / "orig", animals=3, trials=2)
    (tmp_path / "nwb").mkdir()
    sources = [_to_nwb(p, tmp_path / "nwb") for p in originals]
    data = tmp_path / "imported"
    data.mkdir()
    from trainer.data.schema import ACTION_NAMES

    assert main(["import", "nwb", *map(str, sources), "--class-names", "default", "--out", str(data)]) == 0
    imported = list_trials(data)
    assert len(imported) == 6
    for orig in originals:
        with open_trial(orig) as a, open_trial(data / f"{a.animal_id}_{a.trial_id}.h5") as b:
            np.testing.assert_array_equal(b.neural[()], a.neural[()])
            np.testing.assert_array_equal(b.neural_times, a.neural_times)
            np.testing.assert_array_equal(b.pose, a.pose)
            np.testing.assert_array_equal(b.labels, a.labels)
            assert b.class_names == list(ACTION_NAMES) and b.joint_names == a.joint_names
    result = train(load_config("tiny", fast_overrides), data, tmp_path / "run")
    assert result.checkpoint.is_file()


def test_pose_from_a_pose_tools_file_on_the_session_clock(tmp_path: Path) -> None:
    """An NWB session without ndx-pose, and the DeepLabCut file of its camera: --pose-file."""
    import warnings

    shown = warnings.showwarning
    _require("movement")  # its import routes Python warnings to its own logger: undone
    from movement.io import load_poses, save_poses

    warnings.showwarning = shown
    rng = np.random.default_rng(8)
    frames_xy = rng.integers(0, 4000, (45, 6, 8)).astype(np.uint16)
    nwb = _nwbfile()
    _add_two_photon(nwb, frames_xy, start=0.5)
    _add_labels(nwb, [(0.45, 1.0, "walk"), (1.0, 2.0, "rest"), (2.5, 3.0, "groom")])
    src = _write(nwb, tmp_path / "session.nwb")
    xy = rng.normal(200, 30, (320, 2, len(JOINTS), 1))
    dlc = tmp_path / "camDLC_resnet50.h5"
    save_poses.to_dlc_file(load_poses.from_numpy(xy, np.ones((320, len(JOINTS), 1)), individual_names=["fly1"],
                                                 keypoint_names=list(JOINTS)), dlc, split_individuals=False)
    argv = ["import", "nwb", str(src), "--pose-file", str(dlc), "--pose-rate", "100", "--pose-start", "0.45",
            "--class-names", ",".join(ACTIONS), "--out", str(tmp_path)]
    assert main([*argv, "--pose", "PoseEstimation"]) == 1  # two pose sources
    assert main([str(a) for a in (*argv[:2], src, *argv[2:])]) == 1  # one pose file for two sessions
    assert main(argv) == 0
    pose_times = 0.45 + np.arange(320) / 100.0
    with open_trial(tmp_path / "fly1_s1.h5") as t:
        np.testing.assert_array_equal(t.neural[()], frames_xy.transpose(0, 2, 1))
        np.testing.assert_allclose(t.pose[:, :, :2], xy[..., 0].transpose(0, 2, 1), rtol=1e-6)
        np.testing.assert_allclose(t.pose_times, pose_times)
        assert t.joint_names == JOINTS and t.pose_rate_hz == 100.0 and t.attrs["pose_format"] == "dlc"
        expected = np.full(320, -1)
        expected[(pose_times >= 0.45) & (pose_times < 1.0)] = 0
        expected[(pose_times >= 1.0) & (pose_times < 2.0)] = 1
        expected[(pose_times >= 2.5) & (pose_times < 3.0)] = 2
        np.testing.assert_array_equal(t.labels, expected)
