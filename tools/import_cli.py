"""`actionloop import {tiff,numpy,suite2p,nwb}`: bring lab recordings into the recording format."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    tiff = sub.add_parser("tiff", help="multi-page TIFF stack + DeepFly3D pose_result pickle or another pose file "
                                       "(+ labels CSV)")
    tiff.add_argument("--tiff", type=Path, required=True, help="2-photon frames, one page per frame")
    tiff.add_argument("--pose", type=Path, required=True, help="DeepFly3D pose_result*.pkl with points3d (T x 38 x 3), "
                                                               "or a pose file of another tool (--pose-format)")
    tiff.add_argument("--labels", type=Path, help="CSV: 'frame,label' or 'start,stop,label' on pose frames")
    tiff.add_argument("--neural-rate", type=float, required=True, help="imaging frame rate, Hz")
    tiff.add_argument("--pose-rate", type=float, required=True, help="pose camera rate, Hz")
    tiff.add_argument("--neural-start", type=float, default=0.0, help="time of the first frame, s")
    tiff.add_argument("--pose-start", type=float, default=0.0, help="time of the first pose frame, s")
    tiff.add_argument("--channel", type=int, help="channel to import from a frames x channels x H x W stack")
    tiff.add_argument("--joint-names", help="joint names of a pose .npy (comma-separated or .json); other pose files "
                                            "name their joints")
    npy = sub.add_parser("numpy", help=".npz with named arrays, or separate .npy files")
    npy.add_argument("--npz", type=Path, help="keys: neural, pose; optional timestamps (neural_times, neural_t or "
                                              "neural_timestamps; pose_times, pose_t or pose_timestamps), labels, "
                                              "joint_names, class_names")
    npy.add_argument("--neural", type=Path, help="T x H x W .npy (instead of --npz)")
    npy.add_argument("--pose", type=Path, help="pose file (instead of --npz): T x J x 3 .npy, or DeepLabCut, SLEAP, "
                                               "Anipose, DeepFly3D (--pose-format)")
    npy.add_argument("--labels", type=Path, help=".npy of ints per pose frame, or a labels CSV")
    _clock_arguments(npy, neural_rate="Hz: a clock from 0 s without timestamps; with them, checked against them (0.5 %%)")
    s2p = sub.add_parser("suite2p", help="suite2p's registered movie (plane folder: data.bin + ops.npy, or db.npy + "
                                         "settings.npy) + a pose file (+ labels)")
    s2p.add_argument("folder", type=Path, help="plane folder (suite2p/plane0), the suite2p folder, or the folder "
                                               "holding suite2p/")
    s2p.add_argument("--plane", type=int, help="plane index, when the suite2p folder has several")
    s2p.add_argument("--channel", type=int, choices=[1, 2], default=1,
                     help="1: data.bin (default), 2: data_chan2.bin")
    s2p.add_argument("--pose", type=Path, required=True, help="pose file: DeepLabCut, SLEAP, Anipose, DeepFly3D or "
                                                              "T x J x 3 .npy (--pose-format)")
    s2p.add_argument("--labels", type=Path, help=".npy of ints per pose frame, or a labels CSV")
    _clock_arguments(s2p, neural_rate="Hz: replaces the settings' fs (suite2p's default of 10 Hz is often left "
                                      "unset); with --neural-times, checked against them")
    for p in (tiff, npy, s2p):
        _pose_file_arguments(p)
    nwb = sub.add_parser("nwb", help="NWB files (pynwb): TwoPhotonSeries/ImageSeries + ndx-pose PoseEstimation "
                                     "(+ TimeIntervals labels), one trial per file")
    nwb.add_argument("files", type=Path, nargs="+", metavar="FILE.nwb", help="one session (trial) per file")
    nwb.add_argument("--imaging", help="imaging series or imaging plane name, when the file has several")
    nwb.add_argument("--pose", help="PoseEstimation name, when the file has several")
    nwb.add_argument("--labels", help="TimeIntervals table with the labels (default: the one with a label column)")
    nwb.add_argument("--label-column", help="label column of that table (default: label, labels, action, behavior)")
    nwb.add_argument("--frame-axes", choices=["xy", "yx"], default="xy",
                     help="image axes after the frame axis: xy as NWB specifies (stored transposed to rows x "
                          "columns), or yx for writers that stored rows first")
    nwb.add_argument("--z", type=int, help="z-plane index of a volumetric (frame, x, y, z) series")
    nwb.add_argument("--pose-file", type=Path, help="pose from a pose tool's file instead of the NWB file's ndx-pose "
                                                    "(one NWB file; its clock must be the session's: --pose-times, or "
                                                    "--pose-rate with --pose-start)")
    nwb.add_argument("--pose-times", type=Path, help=".npy of the pose file's timestamps on the session clock, s")
    nwb.add_argument("--pose-rate", type=float, help="Hz: the pose file's rate, for a clock from --pose-start")
    nwb.add_argument("--pose-start", type=float, help="session time of the pose file's first frame, s (default 0)")
    nwb.add_argument("--joint-names", help="joint names of a pose .npy (comma-separated or .json)")
    _pose_file_arguments(nwb)
    nwb.add_argument("--animal", help="animal id (default: the file's subject_id; one file only)")
    nwb.add_argument("--trial", help="trial id (default: the file's session_id, else its name; one file only)")
    nwb.add_argument("--out", type=Path, required=True, help="dataset directory (files named ANIMAL_TRIAL.h5)")
    nwb.add_argument("--force", action="store_true", help="replace existing trial files")
    nwb.add_argument("--class-names", help="action names in label order (comma-separated, a .json file, or "
                                           "'default'); needed for integer labels, and to keep one order "
                                           "across files (default: the names the labels use, sorted over all "
                                           "files given)")
    names = "comma-separated action names in label order, a .json file (list, index->name or name->index)"
    tiff.add_argument("--class-names", help=f"{names} (default: the project's fly actions)")
    for p in (npy, s2p):
        p.add_argument("--class-names", help=f"{names}, or 'default' for the project's fly actions; labels need names")
    for p in (tiff, npy, s2p):
        p.add_argument("--animal", required=True, help="animal id")
        p.add_argument("--trial", required=True, help="trial id")
        p.add_argument("--out", type=Path, required=True, help="dataset directory (file named ANIMAL_TRIAL.h5) or a .h5 path")
        p.add_argument("--force", action="store_true", help="replace an existing trial file")


def _clock_arguments(p: argparse.ArgumentParser, neural_rate: str) -> None:
    """Timestamps, rates and start times of the two clocks (import numpy, import suite2p)."""
    p.add_argument("--neural-times", type=Path, help=".npy of neural timestamps, s")
    p.add_argument("--pose-times", type=Path, help=".npy of pose timestamps, s")
    p.add_argument("--neural-rate", type=float, help=neural_rate)
    p.add_argument("--pose-rate", type=float, help="Hz: a clock from --pose-start without timestamps; with them, "
                                                   "checked against them (0.5 %%)")
    p.add_argument("--neural-start", type=float, help="time of the first frame, s, for a clock made from a rate "
                                                      "(default 0)")
    p.add_argument("--pose-start", type=float, help="as --neural-start, for the pose")
    p.add_argument("--joint-names", help="comma-separated joint names in pose order, or a .json file (default: the "
                                         "pose file's; for a bare array, DeepFly3D's 38, announced)")


def _pose_file_arguments(p: argparse.ArgumentParser) -> None:
    from trainer.data.pose_files import POSE_FORMATS

    p.add_argument("--pose-format", choices=POSE_FORMATS, default="auto",
                   help="dlc (.h5/.csv), sleap (.slp/.h5 analysis), anipose (.csv), deepfly3d (.pkl), numpy (.npy); "
                        "auto: from the name and content")
    p.add_argument("--pose-individual", help="the animal to import from a multi-animal DeepLabCut/SLEAP file")
    p.add_argument("--pose-min-confidence", type=float,
                   help="points scored below this (DeepLabCut likelihood, SLEAP/Anipose score) count as missing "
                        "and are interpolated over time (default: keep every point)")


def _names(value: str | None, what: str) -> list[str] | None:
    from trainer.data.names import parse_names
    from trainer.data.schema import ACTION_NAMES

    if value is None:
        return None
    if what == "class names" and value == "default":
        return list(ACTION_NAMES)
    return parse_names(value, what)


def run(args: argparse.Namespace) -> int:
    from trainer.data.recording import RecordingError, open_trial

    failed = 0
    with warnings.catch_warnings():
        # Defaults an importer fills in are announced as warnings: show them as log lines, in order.
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, *_, **__: log.warning(str(message), category=category.__name__)
        try:
            class_names = _names(args.class_names, "class names")
        except (RecordingError, ValueError) as exc:
            log.error("import failed", error=str(exc))
            return 1
        if args.source == "nwb" and class_names is None and len(args.files) > 1:
            class_names = _shared_class_names(args)
        for source in args.files if args.source == "nwb" else [None]:
            try:
                path = _import(args, source, class_names)
                with open_trial(path) as t:  # read back what was written: the import is only done if it opens
                    log.info("imported", path=str(path), animal=t.animal_id, trial=t.trial_id, neural_frames=t.n_neural,
                             frame_shape=list(t.frame_shape), pose_frames=len(t.pose_times),
                             labelled=None if t.labels is None else int((t.labels >= 0).sum()))
            except (RecordingError, ValueError) as exc:
                log.error("import failed", error=str(exc))
                failed += 1
    return 1 if failed else 0


def _shared_class_names(args: argparse.Namespace) -> list[str] | None:
    """One class order for all files (each file's own names would differ where one lacks a class)."""
    from trainer.data.nwb import label_names
    from trainer.data.recording import RecordingError

    names: set[str] = set()
    for path in args.files:
        try:
            names.update(label_names(path, labels=args.labels, label_column=args.label_column))
        except RecordingError:
            continue  # that file's import says what is wrong with it
    if not names:
        return None
    log.info("class names from all files, sorted", class_names=sorted(names))
    return sorted(names)


def _import(args: argparse.Namespace, source: Path | None, class_names: list[str] | None) -> Path:
    from trainer.data.importers import import_numpy, import_tiff_deepfly3d

    if args.source == "nwb":
        from trainer.data.nwb import import_nwb

        if len(args.files) > 1 and (args.animal or args.trial or args.pose_file):
            raise ValueError("--animal/--trial/--pose-file belong to one trial; with several files they come from "
                             "each file")
        pose_options = dict(pose_format=args.pose_format, pose_individual=args.pose_individual,
                            pose_min_confidence=args.pose_min_confidence,
                            joint_names=_names(args.joint_names, "joint names"), pose_times=args.pose_times,
                            pose_rate_hz=args.pose_rate, pose_start_s=args.pose_start)
        return import_nwb(source, args.out, animal_id=args.animal, trial_id=args.trial, imaging=args.imaging,
                          pose=args.pose, labels=args.labels, label_column=args.label_column, class_names=class_names,
                          frame_axes=args.frame_axes, z_plane=args.z, pose_file=args.pose_file,
                          pose_options=pose_options, overwrite=args.force, progress=True)
    pose_file = dict(pose_format=args.pose_format, pose_individual=args.pose_individual,
                     pose_min_confidence=args.pose_min_confidence, joint_names=_names(args.joint_names, "joint names"))
    if args.source == "tiff":
        return import_tiff_deepfly3d(
            args.tiff, args.pose, args.out, animal_id=args.animal, trial_id=args.trial,
            neural_rate_hz=args.neural_rate, pose_rate_hz=args.pose_rate, labels_csv=args.labels,
            neural_start_s=args.neural_start, pose_start_s=args.pose_start, channel=args.channel,
            overwrite=args.force, progress=True, **pose_file, **({"class_names": class_names} if class_names else {}))
    clocks = dict(labels=args.labels, neural_times=args.neural_times, pose_times=args.pose_times,
                  neural_rate_hz=args.neural_rate, pose_rate_hz=args.pose_rate, neural_start_s=args.neural_start,
                  pose_start_s=args.pose_start, class_names=class_names, overwrite=args.force, progress=True)
    if args.source == "suite2p":
        from trainer.data.suite2p import import_suite2p

        return import_suite2p(args.folder, args.out, animal_id=args.animal, trial_id=args.trial, pose=args.pose,
                              plane=args.plane, channel=args.channel, **pose_file, **clocks)
    return import_numpy(args.out, animal_id=args.animal, trial_id=args.trial, npz=args.npz, neural=args.neural,
                        pose=args.pose, **pose_file, **clocks)
