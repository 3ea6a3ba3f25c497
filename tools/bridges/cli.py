"""`actionloop bridge tiff --follow DIR`: publish frames from the TIFF files acquisition software writes."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType

import numpy as np
import structlog

from protocols.messages import FRAME_DTYPES

log = structlog.get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bridge", required=True, metavar="BRIDGE")
    tiff = sub.add_parser("tiff", help="follow TIFF stacks as ScanImage, ThorImage, Prairie View write them",
                          description="Follow the TIFF files of a directory (pages appended to a growing file, "
                                      "new files) and publish each new frame to the decoder.")
    tiff.add_argument("--follow", type=Path, required=True, metavar="DIR", help="the directory the microscope writes to")
    tiff.add_argument("--glob", default="*", metavar="PATTERN",
                      help="only files whose name matches (default: all; files that are not TIFF are skipped)")
    tiff.add_argument("--rate", type=float, default=None, metavar="HZ",
                      help="imaging frame rate; required unless the pages carry ScanImage frame timestamps")
    tiff.add_argument("--channel", type=int, default=None, help="channel to publish from interleaved multi-channel "
                                                                "stacks (0-based, as `actionloop import tiff`)")
    tiff.add_argument("--channels", type=int, default=None,
                      help="channels interleaved page by page (default: what the file declares "
                           "(ScanImage, ImageJ), else 1)")
    tiff.add_argument("--dtype", choices=FRAME_DTYPES, default=None,
                      help="dtype of the published frames (default: uint16, or what the daemon announces)")
    tiff.add_argument("--shape", type=int, nargs=2, default=None, metavar=("HEIGHT", "WIDTH"),
                      help="shape of the published frames (default: the first frame's)")
    tiff.add_argument("--control-endpoint", default=None, metavar="ENDPOINT",
                      help="take the frame shape and dtype from the running daemon's status (its control socket)")
    tiff.add_argument("--frames-endpoint", default="tcp://127.0.0.1:5555", help="where frames are published")
    tiff.add_argument("--frames-connect", action="store_true", help="connect to the endpoint instead of binding it")
    tiff.add_argument("--session", default="", help="session or rig id carried by every frame")
    tiff.add_argument("--from-start", action="store_true",
                      help="also publish the frames already in DIR when the bridge starts (default: only new ones)")
    tiff.add_argument("--interval-ms", type=float, default=2.0, help="polling interval (default 2 ms)")
    tiff.add_argument("--settle", type=float, default=1.0, metavar="SECONDS",
                      help="how long a page may stay unreadable although its bytes are written before its file "
                           "is skipped")
    tiff.add_argument("--wait-subscriber", type=float, default=5.0, metavar="SECONDS",
                      help="wait this long at start for the decoder to subscribe (frames sent before are lost)")


def _check(args: argparse.Namespace) -> str | None:
    if not args.follow.is_dir():
        return f"--follow {args.follow}: not a directory"
    if args.rate is not None and not args.rate > 0:
        return "--rate must be a positive number of frames per second"
    if args.channel is not None and args.channel < 0:
        return "--channel is 0-based and cannot be negative"
    if args.channels is not None and args.channels < 1:
        return "--channels must be at least 1"
    if args.shape is not None and min(args.shape) < 1:
        return "--shape needs a positive height and width"
    if not args.interval_ms > 0:
        return "--interval-ms must be positive"
    return None


def run(args: argparse.Namespace) -> int:
    from protocols.client import FramePublisher
    from tools.bridges.frame_format import FrameFormat
    from tools.bridges.tiff_dir import DirectoryWatch
    from tools.bridges.tiff_follow import TiffFollower

    problem = _check(args)
    if problem:
        log.error("bridge not started", error=problem)
        return 2
    if args.control_endpoint:
        try:
            frame_format = FrameFormat.from_daemon(args.control_endpoint)
        except (TimeoutError, ValueError) as exc:
            log.error("bridge not started: cannot learn the frame format from the daemon", error=str(exc))
            return 1
        given = (np.dtype(args.dtype or frame_format.dtype), tuple(args.shape) if args.shape else frame_format.shape)
        if given != (frame_format.dtype, frame_format.shape):
            log.error("bridge not started: --dtype/--shape differ from what the daemon takes",
                      daemon=[frame_format.dtype.name, list(frame_format.shape or ())],
                      given=[given[0].name, list(given[1] or ())])
            return 2
    else:
        frame_format = FrameFormat(np.dtype(args.dtype or "uint16"), tuple(args.shape) if args.shape else None,
                                   "configured with --dtype/--shape")
    watch = DirectoryWatch(args.follow, args.glob)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()
        signal.signal(signum, signal.SIG_DFL)  # a second one ends the process at once

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    publisher = FramePublisher(args.frames_endpoint, bind=not args.frames_connect, session=args.session)
    try:
        follower = TiffFollower(watch, publisher, frame_format, channel=args.channel, channels=args.channels,
                                rate_hz=args.rate, settle_s=args.settle, publish_existing=args.from_start)
        if not args.from_start:
            follower.baseline()
        log.info("following", directory=str(args.follow), glob=args.glob, frames=publisher.endpoint,
                 dtype=frame_format.dtype.name, shape=list(frame_format.shape) if frame_format.shape else "first frame's",
                 format_from=frame_format.source, files_present=len(watch.files),
                 rate_hz=args.rate, channel=args.channel)
        if args.wait_subscriber > 0 and not publisher.wait_for_subscriber(args.wait_subscriber):
            log.warning("no subscriber yet; publishing anyway", waited_s=args.wait_subscriber)
        follower.run(stop, interval_s=args.interval_ms / 1000)
    finally:
        publisher.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
