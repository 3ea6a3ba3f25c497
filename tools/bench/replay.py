"""Replay a recorded trial into a running decoder, exactly as a microscope would send it.

`actionloop replay --data TRIAL.h5|DIR --frames-endpoint ... --actions-endpoint ...`
publishes the recording's neural frames with the protocol's FramePublisher and subscribes
to the decoder's actions, matching each action to its frame by sequence number. Pacing
(tools/bench/pacing.py): `recorded`, `Nx`, `Nfps` or `max`, on absolute deadlines.

One publishing thread (this one) and one receiving thread (tools/bench/collector.py) that only
receives and stamps. The frames are in RAM before the first send (`ReplayData.preloaded`):
nothing is read from a file while the clock runs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import zmq

from protocols.client import FramePublisher
from tools.bench.collector import ActionCollector
from tools.bench.frames import ReplayData, ReplayError, chain, load_replay_data
from tools.bench.pacing import DeadlinePacer, RateSpec, schedule_offsets_ns
from tools.bench.report import (
    ReplayLog,
    build_report,
    format_latency_table,
    format_report,
    latency_breakdown,
    plot_latency,
    write_json_atomic,
)


log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ReplayOptions:
    frames_endpoint: str
    actions_endpoint: str
    rate: RateSpec = field(default_factory=lambda: RateSpec("recorded"))
    bind_frames: bool = True  # the replay stands where the microscope bridge is: it binds
    start_seq: int = 0
    session: str = "replay"
    connect_timeout_s: float = 10.0
    drain_timeout_s: float = 2.0
    max_wait_s: float = 1.0  # `max` rate: give up on one frame's action after this long
    progress: bool = True


def replay(
    data: ReplayData,
    options: ReplayOptions,
    *,
    context: zmq.Context[Any] | None = None,
) -> ReplayLog:
    """Publish every frame of `data`, collect the actions, return the raw measurements."""
    from tqdm import tqdm

    if len(data) == 0:
        raise ReplayError(f"{data.name or 'data'} has no frames")
    offsets = schedule_offsets_ns(options.rate, data.times_s)
    data = data.preloaded()  # before the clock starts: no file read between two sends
    context = context or zmq.Context.instance()
    collector = ActionCollector(options.actions_endpoint, context=context)
    publisher = FramePublisher(options.frames_endpoint, bind=options.bind_frames, session=options.session,
                               context=context, send_hwm=1000)
    collector.start()
    n = len(data)
    sent_seq = np.empty(n, dtype=np.int64)
    sent_ns = np.empty(n, dtype=np.int64)
    lateness_ns = np.zeros(n, dtype=np.int64)
    n_sent = 0
    try:
        if not publisher.wait_for_subscriber(options.connect_timeout_s):
            raise ReplayError(
                f"no decoder subscribed to frames on {options.frames_endpoint} within {options.connect_timeout_s} s"
            )
        if not collector.wait_until_connected(options.connect_timeout_s):
            raise ReplayError(
                f"no message (heartbeat) from {options.actions_endpoint} within {options.connect_timeout_s} s: "
                "is the decoder running and publishing there?"
            )
        if collector.error is not None:
            raise ReplayError(f"action receiver failed: {collector.error!r}")
        log.info("replay_start", data=data.name, frames=n, rate=str(options.rate))
        pacer = DeadlinePacer(offsets) if offsets is not None else None
        bar = tqdm(total=n, unit="frame", desc=f"replay {data.name}".strip(), disable=not options.progress,
                   mininterval=0.5)
        seqs, first_seq = data.seq, options.start_seq
        assert seqs is not None
        frames = [data.frame(i) for i in range(n)]  # views of the preloaded frames
        seq_of = (np.asarray(seqs, dtype=np.int64) + first_seq).tolist()
        if pacer is not None:
            pacer.start()
        for i in range(n):
            seq = seq_of[i]
            if pacer is not None:
                lateness_ns[i] = pacer.wait(i)
            header = publisher.publish(frames[i], seq=seq, t_acq_ns=None)
            sent_seq[i], sent_ns[i] = seq, header.t_pub_ns
            n_sent = i + 1
            if pacer is None:
                collector.wait_for(seq, options.max_wait_s)
            if collector.error is not None:
                raise ReplayError(f"action receiver failed: {collector.error!r}")
            if i % 64 == 63:
                bar.update(64)
        bar.update(n_sent - bar.n)
        bar.close()
        if n_sent:
            collector.wait_for(int(sent_seq[n_sent - 1]), options.drain_timeout_s)
    finally:
        publisher.close()
        collector.stop()
    decoded_rows, _statuses = collector.rows()
    rows = np.array(decoded_rows, dtype=np.int64).reshape(-1, 8)
    late = lateness_ns[:n_sent]
    if offsets is not None and n_sent:
        log.info("replay_pacing", late_p99_us=round(float(np.percentile(late, 99)) / 1e3, 1),
                 late_max_us=round(float(late.max()) / 1e3, 1))
    if collector.rejected:
        log.warning("replay_rejected_messages", count=collector.rejected, last_reason=collector.last_rejection)
    return ReplayLog(
        sent_seq=sent_seq[:n_sent],
        sent_ns=sent_ns[:n_sent],
        action_seq=rows[:, 0],
        received_ns=rows[:, 1],
        daemon_recv_ns=rows[:, 2],
        daemon_pub_ns=rows[:, 3],
        action_index=rows[:, 4],
        daemon_skipped=int(rows[:, 5].sum()),
        labels=None if data.labels is None else data.labels[:n_sent],
        class_names=data.class_names if data.labels is not None else (),
        pacing_late_ns=late if offsets is not None else None,
        daemon_done_ns=rows[:, 7],
        action_skipped=rows[:, 5],
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="a trial (.h5) or a dataset directory of trials")
    parser.add_argument("--frames-endpoint", default="tcp://127.0.0.1:5555",
                        help="where to publish frames (bound here, as a microscope bridge does)")
    parser.add_argument("--actions-endpoint", default="tcp://127.0.0.1:5556",
                        help="the decoder's actions PUB socket to subscribe to")
    parser.add_argument("--frames-connect", action="store_true",
                        help="connect the frame publisher instead of binding (decoder binds its SUB)")
    parser.add_argument("--rate", default="recorded", help="recorded (default), Nx (e.g. 2x), Nfps, or max")
    parser.add_argument("--max-frames", type=int, default=None, help="replay only the first N frames (in total)")
    parser.add_argument("--start-seq", type=int, default=0, help="sequence number of the first frame")
    parser.add_argument("--connect-timeout", type=float, default=10.0,
                        help="seconds to wait for the decoder to subscribe and send a heartbeat")
    parser.add_argument("--out", type=Path, default=None, help="write report.json and latency.png here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _apply_limit(datasets: list[ReplayData], max_frames: int | None) -> list[ReplayData]:
    if max_frames is None:
        return datasets
    out, left = [], max_frames
    for data in datasets:
        if left <= 0:
            break
        out.append(data.limited(left))
        left -= len(out[-1])
    return out


def run(args: argparse.Namespace) -> int:
    try:
        rate = RateSpec.parse(args.rate)
    except ValueError as exc:
        log.error("replay_bad_rate", error=str(exc))
        return 2
    if args.max_frames is not None and args.max_frames < 1:
        log.error("replay_bad_max_frames", error="--max-frames must be >= 1")
        return 2
    try:
        datasets = _apply_limit(load_replay_data(args.data), args.max_frames)
    except (ReplayError, ValueError, OSError) as exc:  # RecordingError is a ValueError
        log.error("replay_bad_data", path=str(args.data), error=str(exc))
        return 2
    options = ReplayOptions(
        frames_endpoint=args.frames_endpoint,
        actions_endpoint=args.actions_endpoint,
        rate=rate,
        bind_frames=not args.frames_connect,
        start_seq=args.start_seq,
        connect_timeout_s=args.connect_timeout,
        progress=not args.no_progress,
    )
    data = chain(datasets)
    try:
        replay_log = replay(data, options)
    except ReplayError as exc:
        log.error("replay_failed", error=str(exc))
        return 1
    except KeyboardInterrupt:
        log.warning("replay_interrupted")
        return 130
    finally:
        data.close()
    report = build_report(replay_log)
    print(format_report(report))
    breakdown = latency_breakdown(replay_log)
    if breakdown:
        print("\nwhere the time goes:")
        print(format_latency_table(breakdown))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out / "report.json", {
            "data": str(args.data), "rate": str(rate), "frames_endpoint": args.frames_endpoint,
            "actions_endpoint": args.actions_endpoint, **report.as_dict(), "breakdown": breakdown,
        })
        if len(report.end_to_end_us):
            plot_latency({"end-to-end": report.end_to_end_us, "daemon share": report.daemon_us},
                         args.out / "latency.png", title=f"replay of {args.data.name} at {rate}")
        print(f"wrote {args.out / 'report.json'}" + (f" and {args.out / 'latency.png'}" if len(report.end_to_end_us) else ""))
    return 0
