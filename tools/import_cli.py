"""`actionloop import {tiff,numpy}`: bring lab recordings into the recording format."""

from __future__ import annotations

import argparse
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    tiff = sub.add_parser("tiff", help="multi-page TIFF stack + DeepFly3D pose_result pickle (+ labels CSV)")
    tiff.add_argument("--tiff", type=Path, required=True, help="2-photon frames, one page per frame")
    tiff.add_argument("--pose", type=Path, required=True, help="DeepFly3D pose_result*.pkl with points3d (T x 38 x 3)")
    tiff.add_argument("--labels", type=Path, help="CSV: 'frame,label' or 'start,stop,label' on pose frames")
    tiff.add_argument("--neural-rate", type=float, required=True, help="imaging frame rate, Hz")
    tiff.add_argument("--pose-rate", type=float, required=True, help="pose camera rate, Hz")
    tiff.add_argument("--neural-start", type=float, default=0.0, help="time of the first frame, s")
    tiff.add_argument("--pose-start", type=float, default=0.0, help="time of the first pose frame, s")
    tiff.add_argument("--channel", type=int, help="channel to import from a frames x channels x H x W stack")
    npy = sub.add_parser("numpy", help=".npz with named arrays, or separate .npy files")
    npy.add_argument("--npz", type=Path, help="keys: neural, pose; optional neural_times, pose_times, labels, "
                                              "joint_names, class_names")
    npy.add_argument("--neural", type=Path, help="T x H x W .npy (instead of --npz)")
    npy.add_argument("--pose", type=Path, help="T x J x 3 .npy (instead of --npz)")
    npy.add_argument("--labels", type=Path, help=".npy of ints per pose frame, or a labels CSV")
    npy.add_argument("--neural-rate", type=float, help="Hz; required without neural_times")
    npy.add_argument("--pose-rate", type=float, help="Hz; required without pose_times")
    for p in (tiff, npy):
        p.add_argument("--animal", required=True, help="animal id")
        p.add_argument("--trial", required=True, help="trial id")
        p.add_argument("--out", type=Path, required=True, help="dataset directory (file named ANIMAL_TRIAL.h5) or a .h5 path")
        p.add_argument("--force", action="store_true", help="replace an existing trial file")


def run(args: argparse.Namespace) -> int:
    from trainer.data.importers import import_numpy, import_tiff_deepfly3d
    from trainer.data.recording import RecordingError, open_trial

    try:
        if args.source == "tiff":
            path = import_tiff_deepfly3d(
                args.tiff, args.pose, args.out, animal_id=args.animal, trial_id=args.trial,
                neural_rate_hz=args.neural_rate, pose_rate_hz=args.pose_rate, labels_csv=args.labels,
                neural_start_s=args.neural_start, pose_start_s=args.pose_start, channel=args.channel,
                overwrite=args.force, progress=True)
        else:
            path = import_numpy(
                args.out, animal_id=args.animal, trial_id=args.trial, npz=args.npz, neural=args.neural,
                pose=args.pose, labels=args.labels, neural_rate_hz=args.neural_rate, pose_rate_hz=args.pose_rate,
                overwrite=args.force, progress=True)
        with open_trial(path) as t:  # read back what was written: the import is only done if it opens
            log.info("imported", path=str(path), animal=t.animal_id, trial=t.trial_id, neural_frames=t.n_neural,
                     frame_shape=list(t.frame_shape), pose_frames=len(t.pose_times),
                     labelled=None if t.labels is None else int((t.labels >= 0).sum()))
    except (RecordingError, ValueError) as exc:
        log.error("import failed", error=str(exc))
        return 1
    return 0
