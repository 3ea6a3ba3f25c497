"""The receiving side of a replay: a thread that only receives and stamps.

Each reply is stamped the moment it is read off the socket and kept as raw bytes; nothing is
decoded while frames are being sent (decoding holds the GIL that the sending thread needs), so
the stamp is as close to arrival as Python gets. `messages()` decodes everything afterwards.
Replies are protocol messages (actions, status) from a daemon or the protocol echo, or the bare
echo's `[b"echo", frame header]` (tools/bench/echo.py).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import zmq

from protocols.codec import decode
from protocols.errors import ProtocolError
from protocols.messages import TOPIC_ACTION, TOPIC_STATUS, Action, Status


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
