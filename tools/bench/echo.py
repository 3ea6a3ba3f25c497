"""The floors: SUB -> PUB echoes that do everything the daemon does with a frame except the work.

Two modes, each its own process (`python -m tools.bench.echo ...`), as the daemon runs, so the
replay and the echo do not share a Python interpreter lock:

- `--bare`: the bare pyzmq floor. A blocking `recv_multipart` (zero-copy) and a
  `send_multipart` of `[b"echo", the frame's header part as received, two int64 stamps]`: no
  protocol codec at all, only the sockets, the transport and two Python processes.
- protocol (the default): the transport floor with the codec. It validates each frame message
  like the daemon does (`decode_frame`) and publishes one action carrying the frame's sequence
  number and receive/publish stamps, with no decision (state `filling`, index -1).

Both send a status heartbeat, so the replay tool drives them exactly as it drives a daemon.
The difference between the two is what the protocol codec costs; the difference between the
protocol echo and the daemon is what decoding and the daemon's own bookkeeping cost.
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
from tools.bench.collector import ECHO_STAMPS, TOPIC_ECHO

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
        bare: bool = False,
        heartbeat_interval_s: float = 0.2,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.frames_endpoint = frames_endpoint
        self.actions_endpoint = actions_endpoint
        self.frames_bind = frames_bind
        self.bare = bare
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
        # A blocking receive (GIL released) that gives up now and then to look at the stop flag
        # and the heartbeat; no poll before it: one call per frame, as few as the daemon's.
        frames.rcvtimeo = max(1, min(100, int(self.heartbeat_interval_s * 1000)))
        recv, send = frames.recv_multipart, actions.send_multipart
        stamps = ECHO_STAMPS.pack
        bare = self.bare
        while not stop.is_set():
            try:
                parts = recv(copy=False)
            except zmq.Again:
                parts = None
            t_recv = clock()
            if parts is not None:
                if bare:
                    self.echoed += 1
                    send([TOPIC_ECHO, parts[1] if len(parts) > 1 else b"", stamps(t_recv, clock())], copy=False)
                else:
                    self._echo(parts, t_recv, send)
            if t_recv >= next_heartbeat:
                send(encode(self._status(t_recv, started)))
                next_heartbeat = t_recv + interval_ns

    def _echo(self, parts: list[zmq.Frame], t_recv: int, send: Any) -> None:
        try:
            header, _pixels = decode_frame(parts)
        except ProtocolError:
            self.rejected += 1
            return
        t_pub = time.monotonic_ns()
        action = Action(
            seq=header.seq, t_acq_ns=header.t_acq_ns, t_recv_ns=t_recv, t_done_ns=t_pub, t_pub_ns=t_pub,
            state="filling", action="", index=-1, probs=(), confidence=0.0, model_id=ECHO_MODEL_ID,
            session=header.session,
        )
        self.echoed += 1  # counted before sending so a reader of the reply sees the count
        send(encode(action))

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
    parser.add_argument("--bare", action="store_true", help="bare pyzmq echo: no protocol codec (the bare floor)")
    parser.add_argument("--heartbeat-interval", type=float, default=0.2, help="seconds between status messages")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    EchoFloor(args.frames_endpoint, args.actions_endpoint, frames_bind=args.frames_bind, bare=args.bare,
              heartbeat_interval_s=args.heartbeat_interval).serve(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
