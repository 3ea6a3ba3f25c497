"""Skeletons other than DeepFly3D's 38 joints are first-class: recordings imported from suite2p
with DeepLabCut's 2-D mouse-style pose, and from NumPy with Anipose's 3-D pose, train the tiny
preset (with and without cross-animal swapping), and pose normalisation centres on the body
anchor the skeleton names or the configuration gives."""

from __future__ import annotations

import functools
import importlib
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

_require = importlib.import_module if os.environ.get("CI") else functools.partial(
    pytest.importorskip, reason="the pose extra is not installed (pip install -e '.[pose]')")
_shown = warnings.showwarning
_require("movement")  # its import routes every Python warning to its own logger: undone below
from movement.io import load_poses, save_poses  # noqa: E402

warnings.showwarning = _shown

from tools.cli import main  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.data.recording import list_trials, open_trial  # noqa: E402
from trainer.data.schema import ACTION_NAMES  # noqa: E402
from trainer.frametable import build_frame_table  # noqa: E402
from trainer.swapping import body_anchor_joints  # noqa: E402
from trainer.train import build_encoder, train  # noqa: E402

# the synthetic dataset's 6 joints, renamed: no DeepFly3D name among them, 'body' is the anchor
MOUSE = ["snout", "left_ear", "right_ear", "neck", "body", "tail_base"]


def _suite2p_plane(plane: Path, frames: np.ndarray, fs: float) -> None:
    """As suite2p 1.x leaves a plane: data.bin int16 frames x Ly x Lx, db.npy and settings.npy dicts."""
    plane.mkdir(parents=True)
    frames.astype(np.int16).tofile(plane / "data.bin")
    np.save(plane / "db.npy", {"Ly": frames.shape[1], "Lx": frames.shape[2], "nframes": len(frames)})
    np.save(plane / "settings.npy", {"fs": fs, "tau": 1.0})


def test_suite2p_with_deeplabcut_pose_trains(tmp_path: Path, write_dataset, fast_overrides: list[str]) -> None:  # type: ignore[no-untyped-def]
    originals = write_dataset(tmp_path / "orig", animals=3, trials=2)
    data = tmp_path / "imported"
    data.mkdir()
    for k, orig in enumerate(originals):
        with open_trial(orig) as t:
            src = tmp_path / "lab" / t.animal_id / t.trial_id
            _suite2p_plane(src / "suite2p" / "plane0", t.neural[()], t.neural_rate_hz)
            xy = t.pose[:, :, :2].transpose(0, 2, 1)[..., None]  # time x space x keypoints x individuals
            ds = load_poses.from_numpy(xy, np.full((len(xy), len(MOUSE), 1), 0.99), individual_names=["m"],
                                       keypoint_names=list(MOUSE))
            save_poses.to_dlc_file(ds, src / "videoDLC_resnet50.h5", split_individuals=False)
            np.save(src / "labels.npy", t.labels)
            argv = ["import", "suite2p", str(src), "--pose", str(src / "videoDLC_resnet50.h5"), "--pose-rate",
                    str(t.pose_rate_hz), "--labels", str(src / "labels.npy"), "--class-names", "default",
                    "--animal", t.animal_id, "--trial", t.trial_id, "--out", str(data)]
            assert main(argv) == 0
            with open_trial(data / f"{t.animal_id}_{t.trial_id}.h5") as b:
                assert b.joint_names == MOUSE and b.class_names == list(ACTION_NAMES)
                np.testing.assert_array_equal(b.neural[()], t.neural[()].astype(np.float32))
                np.testing.assert_allclose(b.pose[:, :, :2], t.pose[:, :, :2], rtol=1e-6)
                assert not b.pose[:, :, 2].any()  # 2-D: z = 0
                np.testing.assert_allclose(b.neural_times, t.neural_times)
                np.testing.assert_array_equal(b.labels, t.labels)
    paths = list_trials(data)
    cfg = load_config("tiny", fast_overrides)
    table = build_frame_table(paths, build_encoder(cfg, (32, 32)).frame_encoder, 4, progress=False)
    assert table.joint_names == MOUSE and table.body_anchor == ["body"]
    np.testing.assert_allclose(table.pose[:, :, MOUSE.index("body")], 0.0, atol=1e-6)  # centred on the anchor
    for method in ("contrastive_noswap", "ours"):  # "ours" builds the swap index on this skeleton
        result = train(load_config("tiny", [*fast_overrides, f"method={method}"]), data, tmp_path / method)
        ckpt = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
        assert ckpt["frame_dtype"] == "float32" and np.isfinite(ckpt["metrics"]["final_loss"])
        assert ckpt["config"]["data"]["body_anchor"] == []


def _anipose_csv(path: Path, points: np.ndarray, names: list[str]) -> None:
    """Anipose's pose-3d CSV: per joint x, y, z, error, ncams, score; M_ij, center_i, fnum."""
    cols: dict[str, np.ndarray] = {}
    for j, name in enumerate(names):
        for k, axis in enumerate("xyz"):
            cols[f"{name}_{axis}"] = points[:, j, k]
        cols.update({f"{name}_error": np.zeros(len(points)), f"{name}_ncams": np.full(len(points), 2),
                     f"{name}_score": np.ones(len(points))})
    cols.update({f"M_{i}{k}": np.full(len(points), float(i == k)) for i in range(3) for k in range(3)})
    cols.update({f"center_{i}": np.zeros(len(points)) for i in range(3)})
    cols["fnum"] = np.arange(len(points))
    np.savetxt(path, np.column_stack(list(cols.values())), delimiter=",", header=",".join(cols), comments="",
               fmt="%.9g")


def test_anipose_skeleton_with_a_configured_anchor_trains(tmp_path: Path, write_dataset,  # type: ignore[no-untyped-def]
                                                         fast_overrides: list[str]) -> None:
    joints = ["nose", "ear_l", "ear_r", "spine1", "spine2", "tail"]  # no name the automatic rule knows
    originals = write_dataset(tmp_path / "orig", animals=2, trials=1)
    data = tmp_path / "imported"
    data.mkdir()
    for orig in originals:
        with open_trial(orig) as t:
            np.save(tmp_path / "frames.npy", t.neural[()])
            _anipose_csv(tmp_path / "pose-3d.csv", t.pose, joints)
            np.save(tmp_path / "labels.npy", t.labels)
            assert main(["import", "numpy", "--neural", str(tmp_path / "frames.npy"), "--neural-rate", "16",
                         "--pose", str(tmp_path / "pose-3d.csv"), "--pose-rate", "96", "--labels",
                         str(tmp_path / "labels.npy"), "--class-names", "default", "--animal", t.animal_id,
                         "--trial", t.trial_id, "--out", str(data)]) == 0
            with open_trial(data / f"{t.animal_id}_{t.trial_id}.h5") as b:
                assert b.joint_names == joints
                np.testing.assert_allclose(b.pose, t.pose, rtol=1e-6)
    assert body_anchor_joints(joints) == list(range(6))  # nothing to go by: all joints, announced
    with capture_logs() as logs:
        train(load_config("tiny", fast_overrides), data, tmp_path / "all-joints")
    assert any(e["log_level"] == "warning" and "mean of all joints" in e["event"] for e in logs)
    with pytest.raises(ValueError, match=r"body anchor joints \['thorax'\] are not in the recording's skeleton "
                                         r"\(nose, ear_l, ear_r, spine1, spine2, tail\)"):
        body_anchor_joints(joints, ["thorax"])
    overrides = [*fast_overrides, "data.body_anchor=['spine1', 'spine2']"]
    cfg = load_config("tiny", overrides)
    table = build_frame_table(list_trials(data), build_encoder(cfg, (32, 32)).frame_encoder, 4, progress=False,
                              body_anchor=cfg.data.body_anchor)
    assert table.body_anchor == ["spine1", "spine2"]
    np.testing.assert_allclose(table.pose[:, :, [3, 4]].mean(axis=2), 0.0, atol=1e-6)
    with capture_logs() as logs:
        result = train(cfg, data, tmp_path / "run")
    assert result.checkpoint.is_file() and not any("mean of all joints" in e["event"] for e in logs)
    with pytest.raises(ValueError, match="body anchor joints"):
        train(load_config("tiny", [*fast_overrides, "data.body_anchor=['thorax']"]), data, tmp_path / "bad")


def test_the_automatic_anchor_rule() -> None:
    from trainer.data.schema import JOINT_NAMES

    assert [JOINT_NAMES[i] for i in body_anchor_joints(JOINT_NAMES)] == [n for n in JOINT_NAMES if n.endswith("_ThC")]
    assert body_anchor_joints(["head", "Thorax", "abdomen"]) == [1]  # a centre name, any case
    assert body_anchor_joints(["head", "thorax", "RF_ThC"]) == [2]  # DeepFly3D's rule first
    assert body_anchor_joints(["head", "thorax"], ["head"]) == [0]  # the configuration wins


def test_one_skeleton_per_dataset(tmp_path: Path, write_dataset, fast_overrides: list[str]) -> None:  # type: ignore[no-untyped-def]
    import h5py

    from trainer.data.recording import RecordingError

    paths = write_dataset(tmp_path / "d", animals=2, trials=1)
    with h5py.File(paths[1], "r+") as f:  # the second animal tracked with other names
        del f["pose/joint_names"]
        f.create_dataset("pose/joint_names", data=list(MOUSE), dtype=h5py.string_dtype())
    cfg = load_config("tiny", fast_overrides)
    with pytest.raises(RecordingError, match=r"trials have different joint names: a0_t0.h5 has \['RF_ThC'.*"
                                             r"a1_t0.h5 has \['snout'.*one skeleton per dataset"):
        build_frame_table(paths, build_encoder(cfg, (32, 32)).frame_encoder, 4, progress=False)
