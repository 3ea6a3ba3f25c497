"""The transport floor: a bare SUB -> PUB echo that does everything the daemon does with a
frame except the work.

It speaks the daemon's protocol on the same transport: it receives each frame message
(zero-copy), validates its header like the daemon does, and publishes one action for it
carrying the frame's sequence number and receive/publish stamps, with no decision (state
`filling`, index -1). It also sends a status heartbeat, so the replay tool can drive it
exactly as it drives a daemon. Replaying into it measures what the sockets, the codec and
two Python processes cost on this machine: the part of end-to-end latency no decoder can beat.

Run it as its own process (`python -m tools.bench.echo ...`), as the daemon runs, so the
replay and the echo do not share a Python interpreter lock.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from typing import Any

import zmq

from protocols.codec import decode_frame, encode
from protocols.errors import ProtocolError
from protocols.messages import TOPIC_FRAME, Action, Status

ECHO_MODEL_ID = "echo"


class EchoFloor:
    """Frames in, one empty action per frame out, nothing else.

    The constructor only stores settings; `serve(stop)` binds/connects, runs until `stop` is
    set, and closes its sockets.
    """

    def __init__(
        self,
        frames_endpoint: str,
        actions_endpoint: str,
        *,
        frames_bind: bool = False,
        heartbeat_interval_s: float = 0.2,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.frames_endpoint = frames_endpoint
        self.actions_endpoint = actions_endpoint
        self.frames_bind = frames_bind
        self.heartbeat_interval_s = heartbeat_interval_s
        self._context = context
        self.echoed = 0
        self.rejected = 0
        self.ready = threading.Event()
        self.frames_bound_endpoint = ""  # the real endpoints once bound (random ports resolved)
        self.actions_bound_endpoint = ""

    def serve(self, stop: threading.Event) -> None:
        context = self._context or zmq.Context.instance()
        frames = context.socket(zmq.SUB)
        actions = context.socket(zmq.PUB)
        try:
            frames.linger = 0
            actions.linger = 100
            frames.rcvhwm = 1000
            frames.setsockopt(zmq.SUBSCRIBE, TOPIC_FRAME)
            if self.frames_bind:
                frames.bind(self.frames_endpoint)
                self.frames_bound_endpoint = frames.getsockopt_string(zmq.LAST_ENDPOINT)
            else:
                frames.connect(self.frames_endpoint)
            actions.bind(self.actions_endpoint)
            self.actions_bound_endpoint = actions.getsockopt_string(zmq.LAST_ENDPOINT)
            self.ready.set()
            self._loop(frames, actions, stop)
        finally:
            frames.close(linger=0)
            actions.close(linger=100)

    def _loop(self, frames: zmq.Socket[Any], actions: zmq.Socket[Any], stop: threading.Event) -> None:
        clock = time.monotonic_ns
        started = clock()
        interval_ns = int(self.heartbeat_interval_s * 1e9)
        next_heartbeat = started
        while not stop.is_set():
            now = clock()
            if now >= next_heartbeat:
                actions.send_multipart(encode(self._status(now, started)))
                next_heartbeat = now + interval_ns
            timeout_ms = max(1, min(100, (next_heartbeat - now) // 1_000_000))
            if not frames.poll(timeout_ms, zmq.POLLIN):
                continue
            parts = frames.recv_multipart(copy=False)
            t_recv = clock()
            try:
                header, _pixels = decode_frame(parts)
            except ProtocolError:
                self.rejected += 1
                continue
            t_pub = clock()
            action = Action(
                seq=header.seq, t_acq_ns=header.t_acq_ns, t_recv_ns=t_recv, t_done_ns=t_pub, t_pub_ns=t_pub,
                state="filling", action="", index=-1, probs=(), confidence=0.0, model_id=ECHO_MODEL_ID,
                session=header.session,
            )
            self.echoed += 1  # counted before sending so a reader of the reply sees the count
            actions.send_multipart(encode(action))

    def _status(self, now: int, started: int) -> Status:
        return Status(
            t_ns=now, state="running", uptime_s=(now - started) / 1e9, model_id=ECHO_MODEL_ID, backend="none",
            window=0, window_fill=0, counters={"echoed": self.echoed, "rejected": self.rejected},
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.echo", description=__doc__.splitlines()[0])
    parser.add_argument("--frames-endpoint", default="tcp://127.0.0.1:5555")
    parser.add_argument("--actions-endpoint", default="tcp://127.0.0.1:5556")
    parser.add_argument("--frames-bind", action="store_true", help="bind the frame SUB (default: connect)")
    parser.add_argument("--heartbeat-interval", type=float, default=0.2, help="seconds between status messages")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    EchoFloor(args.frames_endpoint, args.actions_endpoint, frames_bind=args.frames_bind,
              heartbeat_interval_s=args.heartbeat_interval).serve(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
