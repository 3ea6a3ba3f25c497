"""`actionloop bench-serial`: decision -> TTL byte, through the real daemon and a pseudo-terminal.

The daemon runs as its own process (`python -m decoder`) with `[outputs.serial]` on the slave
of a pty, every action mapped to a line; this process publishes frames at a steady rate, a SUB
socket collects the daemon's events, and a thread that only reads and stamps waits on the pty
master. Each byte is matched, in order, to the event that caused it:

- event -> byte: the event's `t_pub_ns` (stamped by the daemon just before it publishes the
  event and writes the byte) to the byte's arrival on the master;
- frame -> byte: the frame's publish time (its `t_acq_ns`) to the same arrival: the whole
  decision (receive, decode, debounce) plus the serial write;
- floor: one byte written on a second pty's slave by this process and read on its master by
  the same kind of reader thread (the pty and the thread wake-up alone).

A pty has no bit rate: a real USB-serial line adds its own transfer (about 0.1-1 ms for USB
full speed, more for a USB-UART bridge's latency timer). Writes `--out` (bench/serial.json) and
a `.md` table next to it. The model is the default encoder at 32 x 32, untrained, with a head
fitted so that its decisions follow the frames (cached under `--work-dir`).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import zmq

from protocols.client import ActionSubscriber, ControlClient, FramePublisher
from protocols.messages import TOPIC_EVENT, Event
from protocols.ttl import ALL_LOW, line_byte
from tools.bench.inference import _machine, percentiles
from tools.bench.processes import BenchError, ManagedProcess, _child_env, daemon_env, loopback_endpoints
from tools.bench.report import write_json_atomic

log = structlog.get_logger(__name__)

FRAME_SHAPE = (32, 32)
WINDOW = 4


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("bench/serial.json"), help="JSON to write (.md next to it)")
    parser.add_argument("--work-dir", type=Path, default=Path("bench/work/serial"), help="model and daemon log")
    parser.add_argument("--frames", type=int, default=900, help="frames published into the daemon")
    parser.add_argument("--rate", type=float, default=60.0, help="frames per second")
    parser.add_argument("--segment", type=int, default=8, help="frames per bout of similar frames (sets the event rate)")
    parser.add_argument("--floor-bytes", type=int, default=300, help="bytes for the bare pty floor")


def frames_in_bouts(count: int, segment: int, seed: int = 0) -> np.ndarray:
    """Bouts of similar frames (a pattern plus noise): the model holds a decision within one."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0, 4000, size=(count // segment + 1, *FRAME_SHAPE))
    noise = rng.normal(0, 150, size=(count, *FRAME_SHAPE))
    return np.clip(patterns[np.arange(count) // segment] + noise, 0, 65535).astype(np.uint16)


def prepare_bundle(work_dir: Path) -> Path:
    out = work_dir / "bundle-32x32"
    if (out / "manifest.json").exists():
        return out
    import torch

    from trainer.data.schema import ACTION_NAMES
    from trainer.export import export_model
    from trainer.models import DEFAULT_NEURAL_MODEL, build_model

    torch.manual_seed(0)
    model = build_model(DEFAULT_NEURAL_MODEL, frame_shape=list(FRAME_SHAPE), window=WINDOW).eval()
    frames = torch.from_numpy(frames_in_bouts(64, 8, seed=99).astype(np.float32))
    with torch.no_grad():
        embeddings = model(torch.stack([frames[i : i + WINDOW] for i in range(len(frames) - WINDOW)]))
    # a random head over whitened embeddings: confident decisions that change between bouts
    mean, std = embeddings.mean(0), embeddings.std(0) + 1e-6
    weight = torch.randn(len(ACTION_NAMES), embeddings.shape[1], generator=torch.Generator().manual_seed(0)) * 2.0 / std
    export_model(model, weight, -(weight @ mean), ACTION_NAMES, out, frame_rate_hz=30.0, include_pt2=False,
                 parity_tolerance=1e-2, provenance={"note": "untrained, made by `actionloop bench-serial`"})
    return out


class PtyReader(threading.Thread):
    """Reads a pty master and stamps every read with time.monotonic_ns() (nothing else)."""

    def __init__(self) -> None:
        super().__init__(name="pty-reader", daemon=True)
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        self.arrivals: list[tuple[int, int]] = []  # (t_ns, byte)
        self._stop_r, self._stop_w = os.pipe()

    def run(self) -> None:
        while True:
            ready, _, _ = select.select([self.master, self._stop_r], [], [])
            if self.master in ready:
                data = os.read(self.master, 4096)
                t = time.monotonic_ns()
                self.arrivals.extend((t, b) for b in data)
            if self._stop_r in ready:
                return

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        self.join(5)
        for fd in (self.master, self.slave, self._stop_r, self._stop_w):
            os.close(fd)

    def wait_for(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.arrivals) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return len(self.arrivals) >= count


def measure_floor(n: int) -> np.ndarray:
    """This process writes one byte on a pty slave, the reader thread stamps it on the master."""
    reader = PtyReader()
    reader.start()
    fd = os.open(reader.path, os.O_RDWR | os.O_NOCTTY)
    try:
        import termios
        import tty

        tty.setraw(fd, termios.TCSANOW)  # as pyserial configures the daemon's port
        sent = []
        for i in range(n):
            sent.append(time.monotonic_ns())
            os.write(fd, line_byte(i % 8, True))
            reader.wait_for(i + 1, 1.0)
            time.sleep(0.002)
    finally:
        os.close(fd)
        reader.stop()
    return np.array([t for t, _ in reader.arrivals[:n]], np.int64) - np.array(sent[: len(reader.arrivals)], np.int64)


def queued_events(sub: ActionSubscriber) -> list[Event]:
    """The events that waited in the SUB socket's queue during the run (read after it, so that
    no thread of this process decodes messages while the pty reader waits for its byte)."""
    events = []
    while True:
        try:
            message = sub.recv(timeout=0.3)
        except TimeoutError:
            return events
        if isinstance(message, Event):
            events.append(message)


def run_daemon(args: argparse.Namespace, bundle: Path) -> dict[str, Any]:
    from protocols.bundle import load_bundle

    class_names = load_bundle(bundle).class_names
    lines = {name: i for i, name in enumerate(class_names)}
    endpoints = loopback_endpoints()
    reader = PtyReader()
    reader.start()
    env = daemon_env(bundle, endpoints, "onnxruntime", "streaming", 1, args.work_dir / "decisions.msgpack")
    env.update({
        "ACTIONLOOP_OUTPUTS__SERIAL__PORT": reader.path,
        "ACTIONLOOP_OUTPUTS__SERIAL__LINES": json.dumps(lines),
        "ACTIONLOOP_BACKEND__WARMUP_FRAMES": "5",
    })
    context = zmq.Context()
    publisher = FramePublisher(endpoints["frames"], bind=True, context=context)
    sub = ActionSubscriber(endpoints["actions"], topics=[TOPIC_EVENT], context=context)
    sub.socket.rcvhwm = 0  # no limit: every event of the run waits here until it is read
    events: list[Event] = []
    daemon = ManagedProcess("daemon", [sys.executable, "-m", "decoder"], _child_env(env), args.work_dir / "daemon.log")
    try:
        with ControlClient(endpoints["control"], context=context) as control:
            deadline = time.monotonic() + 120
            while True:
                daemon.check_alive()
                try:
                    control.request("ping", timeout=1.0)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise BenchError(f"daemon not ready after 120 s:\n{daemon.log_tail()}") from None
        if not reader.wait_for(1, 5.0) or reader.arrivals[0][1] != ALL_LOW:
            raise BenchError(f"the daemon did not open the serial output:\n{daemon.log_tail()}")
        if not publisher.wait_for_subscriber(10.0):
            raise BenchError("the daemon never subscribed to the frames")
        time.sleep(0.3)  # the event subscriber's connection settles
        frames = frames_in_bouts(args.frames, args.segment)
        interval_ns = int(1e9 / args.rate)
        start = time.monotonic_ns() + 50_000_000
        for i, frame in enumerate(frames):  # absolute deadlines: no drift
            target = start + i * interval_ns
            if (wait_ns := target - time.monotonic_ns()) > 0:
                time.sleep(wait_ns / 1e9)  # no spinning: the reader thread must get the GIL at once
            publisher.publish(frame, seq=i)
        time.sleep(0.5)
        daemon.check_alive()
        events = queued_events(sub)
    finally:
        code = daemon.stop()
        time.sleep(0.1)
        reader.stop()
        sub.close()
        publisher.close(0)
        context.term()
    arrivals = reader.arrivals[1:]  # after the all-low of the open
    if arrivals and arrivals[-1][1] == ALL_LOW:
        arrivals = arrivals[:-1]  # the all-low of the clean shutdown
    expected = [line_byte(lines[e.action], e.kind == "onset")[0] for e in events]
    got = [b for _, b in arrivals]
    if got != expected:
        raise BenchError(f"bytes on the pty do not match the events: {len(got)} bytes, {len(expected)} events")
    t_byte = np.array([t for t, _ in arrivals], np.int64)
    return {
        "events": len(events),
        "daemon_exit_code": code,
        "event_to_byte": percentiles(t_byte - np.array([e.t_pub_ns for e in events], np.int64)) if events else {},
        "frame_to_byte": percentiles(t_byte - np.array([e.t_acq_ns for e in events], np.int64)) if events else {},
    }


def _table(result: dict[str, Any]) -> str:
    rows = [("event published -> byte on the pty master", result["daemon"]["event_to_byte"]),
            ("frame published -> byte on the pty master", result["daemon"]["frame_to_byte"]),
            ("floor: byte written -> read on a pty master", result["floor"])]
    out = ["| path | n | p50 (µs) | p99 (µs) | max (µs) |", "|---|---|---|---|---|"]
    out += [f"| {name} | {s['n']} | {s['p50_us']} | {s['p99_us']} | {s['max_us']} |" for name, s in rows]
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.frames < 1 or not args.rate > 0 or args.segment < 1 or args.floor_bytes < 1:
        log.error("bad arguments", error="--frames, --rate, --segment and --floor-bytes must be positive")
        return 2
    args.work_dir.mkdir(parents=True, exist_ok=True)
    try:
        bundle = prepare_bundle(args.work_dir)
        floor = percentiles(measure_floor(args.floor_bytes))
        daemon = run_daemon(args, bundle)
    except BenchError as exc:
        log.error("benchmark failed", error=str(exc))
        return 1
    argv = list(sys.argv)
    if Path(argv[0]).name in ("actionloop", "cli.py"):
        argv[0] = "actionloop"
    result = {
        "command": shlex.join(argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": _machine(),
        "frames": args.frames, "rate_fps": args.rate, "segment_frames": args.segment,
        "daemon": daemon, "floor": floor,
    }
    write_json_atomic(args.out, result)
    table = _table(result)
    args.out.with_suffix(".md").write_text(
        f"Decision -> serial TTL byte ({result['command']}, {result['date']}, {daemon['events']} events)\n\n" + table)
    print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actionloop bench-serial", description=__doc__.splitlines()[0])
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
