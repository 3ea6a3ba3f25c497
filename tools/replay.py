"""Replay a recorded trial into a running decoder, exactly as a microscope would send it.

`actionloop replay --data TRIAL.h5|DIR --frames-endpoint ... --actions-endpoint ...`
publishes the recording's neural frames with the protocol's FramePublisher and subscribes
to the decoder's actions, matching each action to its frame by sequence number. Pacing:

- `recorded`: at the recorded timestamps (the recording's own frame intervals);
- `Nx` (e.g. `2x`, `0.5x`): the recorded timestamps compressed N times;
- `Nfps` (e.g. `300fps`): a fixed rate, whatever the recording's rate;
- `max`: as fast as the decoder keeps up (the next frame goes out when the previous
  frame's action has come back, or after `--max-wait` seconds without it).

Deadlines are absolute (start time + offset of frame i), so pacing does not drift however
long the trial: a late frame does not push the later ones back.

One publishing thread (this one) and one receiving thread: the receiver stamps each action
the moment it is read from the socket, before decoding, so latency excludes our own parsing.
"""

from __future__ import annotations

import argparse
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog
import zmq

from protocols.client import FramePublisher
from protocols.codec import decode
from protocols.errors import ProtocolError
from protocols.messages import TOPIC_ACTION, TOPIC_STATUS, Action, Status
from tools.latency_report import (
    ReplayLog,
    build_report,
    format_latency_table,
    format_report,
    latency_breakdown,
    plot_latency,
    write_json_atomic,
)

log = structlog.get_logger(__name__)

RateKind = Literal["recorded", "speed", "fps", "max"]
_RATE_RE = re.compile(r"^\s*(?P<value>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>x|fps)?\s*$", re.IGNORECASE)


class ReplayError(RuntimeError):
    """The replay cannot run (bad arguments, no decoder answering, unreadable data)."""


# --- pacing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateSpec:
    """How fast to publish: `recorded`, `Nx` speed-up, a fixed `Nfps`, or `max`."""

    kind: RateKind
    value: float = 1.0

    @classmethod
    def parse(cls, text: str) -> RateSpec:
        """`recorded`, `max`, `2x`, `0.5x`, `300fps`; a bare number means frames per second."""
        lowered = text.strip().lower()
        if lowered == "recorded":
            return cls("recorded")
        if lowered == "max":
            return cls("max")
        match = _RATE_RE.match(lowered)
        if match is None:
            raise ValueError(f"rate {text!r} is not one of: recorded, max, Nx (e.g. 2x), Nfps (e.g. 300fps)")
        value = float(match["value"])
        if not 0 < value < 1e6:
            raise ValueError(f"rate {text!r} must be positive and below 1e6")
        unit = (match["unit"] or "fps").lower()
        return cls("speed" if unit == "x" else "fps", value)

    def __str__(self) -> str:
        if self.kind == "speed":
            return f"{self.value:g}x"
        if self.kind == "fps":
            return f"{self.value:g}fps"
        return self.kind


def schedule_offsets_ns(rate: RateSpec, frame_times_s: np.ndarray) -> np.ndarray | None:
    """Publish time of each frame relative to the first, in ns; None for `max` (no schedule).

    `frame_times_s` are the recording's acquisition times (monotonic seconds).
    """
    n = len(frame_times_s)
    if rate.kind == "max":
        return None
    if rate.kind == "fps":
        return np.round(np.arange(n, dtype=np.float64) * (1e9 / rate.value)).astype(np.int64)
    times = np.asarray(frame_times_s, dtype=np.float64)
    if n and (not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0)):
        raise ValueError("the recording's frame times are not finite and non-decreasing")
    speed = rate.value if rate.kind == "speed" else 1.0
    relative = (times - times[0]) if n else times
    return np.round(relative * (1e9 / speed)).astype(np.int64)


class DeadlinePacer:
    """Waits for absolute deadlines `start + offset[i]`: lateness never accumulates (no drift).

    `clock` returns ns and `sleep` takes seconds; both are injectable so tests can use a fake
    clock. `wait(i)` returns how late (ns, >= 0) the call returned relative to deadline i.
    """

    def __init__(
        self,
        offsets_ns: np.ndarray,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.offsets_ns = np.asarray(offsets_ns, dtype=np.int64)
        self._clock = clock
        self._sleep = sleep
        self.start_ns: int | None = None

    def start(self, start_ns: int | None = None) -> int:
        self.start_ns = self._clock() if start_ns is None else start_ns
        return self.start_ns

    def deadline_ns(self, i: int) -> int:
        if self.start_ns is None:
            raise RuntimeError("DeadlinePacer.start() was not called")
        return self.start_ns + int(self.offsets_ns[i])

    def wait(self, i: int) -> int:
        deadline = self.deadline_ns(i)
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                return -remaining
            self._sleep(remaining / 1e9)


# --- frames ---------------------------------------------------------------------------------


@dataclass
class ReplayData:
    """Frames to replay with their acquisition times, (optional) labels and sequence numbers.

    `seq[i]` is frame i's sequence number relative to the replay's start (default 0, 1, 2, ...);
    `chain` leaves a jump between trials so the decoder starts a fresh window for each trial,
    as it would when a microscope starts a new acquisition.
    """

    frames: Any  # indexable (T, H, W): an h5py dataset is read one frame at a time
    times_s: np.ndarray
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    name: str = ""
    seq: np.ndarray | None = None
    _owners: list[Any] = field(default_factory=list, repr=False)  # objects keeping files open

    def __post_init__(self) -> None:
        what = self.name or "data"
        if len(self.frames) != len(self.times_s):
            raise ValueError(f"{what}: {len(self.frames)} frames but {len(self.times_s)} timestamps")
        if self.labels is not None and len(self.labels) != len(self.frames):
            raise ValueError(f"{what}: {len(self.frames)} frames but {len(self.labels)} labels")
        if self.seq is None:
            self.seq = np.arange(len(self.frames), dtype=np.int64)
        elif len(self.seq) != len(self.frames) or np.any(np.diff(self.seq) <= 0) or (len(self.seq) and self.seq[0] < 0):
            raise ValueError(f"{what}: seq must hold one increasing, non-negative number per frame")

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, i: int) -> np.ndarray:
        """A fresh C-contiguous array per call: it may still be in flight after publish."""
        return np.ascontiguousarray(self.frames[i])

    def limited(self, max_frames: int | None) -> ReplayData:
        if max_frames is None or max_frames >= len(self):
            return self
        assert self.seq is not None
        return ReplayData(
            frames=_Head(self.frames, max_frames),
            times_s=self.times_s[:max_frames],
            labels=None if self.labels is None else self.labels[:max_frames],
            class_names=self.class_names,
            name=self.name,
            seq=self.seq[:max_frames],
            _owners=[self],
        )

    def close(self) -> None:
        """Close the recordings behind this data (h5py files); safe to call twice."""
        for owner in self._owners:
            close = getattr(owner, "close", None)
            if callable(close):
                close()


TRIAL_SEQ_GAP = 1000  # sequence jump between chained trials: far above any window, so it resets


class _Chain:
    """Frames of several trials indexed as one sequence, read lazily from each."""

    def __init__(self, parts: Sequence[Any]) -> None:
        self._parts = list(parts)
        self._ends = np.cumsum([len(p) for p in self._parts])

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self._ends, i, side="right"))
        start = int(self._ends[k - 1]) if k else 0
        return self._parts[k][i - start]


def chain(datasets: Sequence[ReplayData]) -> ReplayData:
    """Several trials as one replay: times run on (one frame interval between trials) and
    sequence numbers jump by TRIAL_SEQ_GAP at each trial boundary."""
    if not datasets:
        raise ValueError("no trials to replay")
    if len(datasets) == 1:
        return datasets[0]
    labelled = [d.labels is not None for d in datasets]
    names = {d.class_names for d in datasets if d.labels is not None}
    if len(names) > 1:
        raise ValueError("the trials disagree on class names")
    times, seqs, t_next, s_next = [], [], 0.0, 0
    for d in datasets:
        assert d.seq is not None
        t = np.asarray(d.times_s, dtype=np.float64)
        step = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
        times.append(t - (t[0] if len(t) else 0.0) + t_next)
        t_next = (times[-1][-1] + step) if len(t) else t_next
        seqs.append(d.seq - (d.seq[0] if len(d.seq) else 0) + s_next)
        s_next = (int(seqs[-1][-1]) + TRIAL_SEQ_GAP) if len(d.seq) else s_next
    return ReplayData(
        frames=_Chain([d.frames for d in datasets]),
        times_s=np.concatenate(times),
        labels=np.concatenate([d.labels for d in datasets]) if all(labelled) else None,  # type: ignore[misc]
        class_names=next(iter(names)) if all(labelled) and names else (),
        name=f"{len(datasets)} trials",
        seq=np.concatenate(seqs).astype(np.int64),
        _owners=list(datasets),
    )


class _Head:
    """The first n items of an indexable, without reading them."""

    def __init__(self, inner: Any, n: int) -> None:
        self._inner, self._n = inner, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._inner[i]


def load_replay_data(path: Path) -> list[ReplayData]:
    """One ReplayData per trial: a single `.h5` file, or every trial of a dataset directory."""
    from trainer.data.recording import list_trials, open_trial  # tools/ may import everything

    path = Path(path)
    if path.is_dir():
        files = list_trials(path)  # raises RecordingError (a ValueError) when there is none
    elif path.is_file():
        files = [path]
    else:
        raise ReplayError(f"{path} does not exist")
    out = []
    for file in files:
        trial = open_trial(file)
        labels = trial.neural_labels() if trial.labels is not None else None
        out.append(
            ReplayData(
                frames=trial.neural,
                times_s=np.asarray(trial.neural_times, dtype=np.float64),
                labels=None if labels is None else np.asarray(labels, dtype=np.int64),
                class_names=tuple(trial.class_names),
                name=f"{trial.animal_id}/{trial.trial_id}",
                _owners=[trial],
            )
        )
    return out


# --- receiving ------------------------------------------------------------------------------


class ActionCollector(threading.Thread):
    """Receives actions (and heartbeats) on a SUB socket, stamping each on arrival.

    Runs until `stop()`; `wait_for(seq)` lets the publisher run in lock-step (`max` rate).
    Malformed messages are counted in `rejected`, never raised.
    """

    POLL_MS = 50

    def __init__(self, endpoint: str, *, context: zmq.Context[Any] | None = None, bind: bool = False) -> None:
        super().__init__(name="replay-actions", daemon=True)
        self._context = context or zmq.Context.instance()
        self.socket = self._context.socket(zmq.SUB)
        self.socket.linger = 0
        self.socket.rcvhwm = 100_000  # never drop our own measurements
        for topic in (TOPIC_ACTION, TOPIC_STATUS):
            self.socket.setsockopt(zmq.SUBSCRIBE, topic)
        if bind:
            self.socket.bind(endpoint)
        else:
            self.socket.connect(endpoint)
        self._stop_requested = threading.Event()
        self._cond = threading.Condition()
        self._seen_anything = threading.Event()
        self.latest_seq = -1
        self.rows: list[tuple[int, int, int, int, int, int, int, int]] = []
        self.statuses: list[Status] = []
        self.rejected = 0
        self.last_rejection = ""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # surfaced to the publisher thread, never swallowed
            self.error = exc
            self._seen_anything.set()
            with self._cond:
                self._cond.notify_all()
        finally:
            self.socket.close(linger=0)

    def _loop(self) -> None:
        socket, clock = self.socket, time.monotonic_ns
        while not self._stop_requested.is_set():
            if not socket.poll(self.POLL_MS, zmq.POLLIN):
                continue
            while True:
                try:
                    parts = socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                arrived = clock()
                try:
                    message = decode(parts)
                except ProtocolError as exc:
                    self.rejected += 1
                    self.last_rejection = exc.reason
                    continue
                self._seen_anything.set()
                if isinstance(message, Action):
                    self.rows.append(
                        (message.seq, arrived, message.t_recv_ns, message.t_pub_ns, message.index,
                         message.skipped, message.dropped, message.t_done_ns)
                    )
                    with self._cond:
                        self.latest_seq = max(self.latest_seq, message.seq)
                        self._cond.notify_all()
                elif isinstance(message, Status):
                    self.statuses.append(message)

    def wait_until_connected(self, timeout_s: float) -> bool:
        """True once any valid message (a heartbeat or an action) has arrived."""
        return self._seen_anything.wait(timeout_s)

    def wait_for(self, seq: int, timeout_s: float) -> bool:
        """Block until an action for `seq` or a later frame has arrived."""
        with self._cond:
            return self._cond.wait_for(lambda: self.latest_seq >= seq or self.error is not None, timeout_s)

    def stop(self) -> None:
        self._stop_requested.set()
        self.join(timeout=5)


# --- the replay loop ------------------------------------------------------------------------


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
        frame = data.frame(0)
        if pacer is not None:
            pacer.start()
        for i in range(n):
            seq = first_seq + int(seqs[i])
            if pacer is not None:
                lateness_ns[i] = pacer.wait(i)
            header = publisher.publish(frame, seq=seq, t_acq_ns=None)
            sent_seq[i], sent_ns[i] = seq, header.t_pub_ns
            n_sent = i + 1
            if i + 1 < n:
                frame = data.frame(i + 1)  # read ahead while the decoder works on this one
            if pacer is None:
                collector.wait_for(seq, options.max_wait_s)
            if collector.error is not None:
                raise ReplayError(f"action receiver failed: {collector.error!r}")
            bar.update(1)
        bar.close()
        if n_sent:
            collector.wait_for(int(sent_seq[n_sent - 1]), options.drain_timeout_s)
    finally:
        publisher.close()
        collector.stop()
    rows = np.array(collector.rows, dtype=np.int64).reshape(-1, 8)
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
    )


# --- CLI ------------------------------------------------------------------------------------


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
