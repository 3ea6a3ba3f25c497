"""The receiving side of a replay: a thread that only receives and stamps.

Each reply is stamped the moment it is read off the socket and kept as raw bytes; nothing is
decoded while frames are being sent (decoding holds the GIL that the sending thread needs), so
the stamp is as close to arrival as Python gets. `rows()` decodes everything afterwards.
Replies are protocol messages (actions, status) from a daemon or the protocol echo, or the bare
echo's `[b"echo", frame header, stamps]` (tools/bench/echo.py), which carries no protocol
message at all.
"""

from __future__ import annotations

import struct
import threading
import time
from typing import Any

import msgpack
import zmq

from protocols.codec import decode
from protocols.errors import ProtocolError
from protocols.messages import TOPIC_ACTION, TOPIC_STATUS, Action, Status

TOPIC_ECHO = b"echo"  # the bare echo's reply: the frame's header as it came, then two int64 stamps
ECHO_STAMPS = struct.Struct("<qq")  # the bare echo's receive and send stamps (monotonic ns)

Row = tuple[int, int, int, int, int, int, int, int]  # seq, arrived, recv, pub, index, skipped, dropped, done


class ActionCollector(threading.Thread):
    """Receives replies on a SUB socket and stamps each on arrival; decodes only afterwards.

    Runs until `stop()`. `wait_for(seq)` (the `max` rate's lock-step, and the final drain)
    asks the thread to signal each arrival while someone waits; otherwise it signals nothing.
    Malformed messages are counted in `rejected` when decoded, never raised.
    """

    TIMEOUT_MS = 50  # how often the thread looks at its stop flag while nothing arrives

    def __init__(self, endpoint: str, *, context: zmq.Context[Any] | None = None, bind: bool = False) -> None:
        super().__init__(name="replay-actions", daemon=True)
        self._context = context or zmq.Context.instance()
        self.socket = self._context.socket(zmq.SUB)
        self.socket.linger = 0
        self.socket.rcvhwm = 1_000_000  # never drop our own measurements
        self.socket.rcvtimeo = self.TIMEOUT_MS
        for topic in (TOPIC_ACTION, TOPIC_STATUS, TOPIC_ECHO):
            self.socket.setsockopt(zmq.SUBSCRIBE, topic)
        if bind:
            self.socket.bind(endpoint)
        else:
            self.socket.connect(endpoint)
        self._stop_requested = False
        self._cond = threading.Condition()
        self._waiting = False  # someone is in wait_for: signal arrivals
        self._seen_anything = threading.Event()
        self.raw: list[tuple[int, list[bytes]]] = []  # (arrival stamp, parts), in arrival order
        self._checked = 0  # raw replies already looked at by wait_for
        self._latest_seq = -1
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
        recv, clock, append = self.socket.recv_multipart, time.monotonic_ns, self.raw.append
        seen = False
        while not self._stop_requested:
            try:
                parts = recv()  # blocks with the GIL released
            except zmq.Again:
                continue
            append((clock(), parts))
            if not seen:
                seen = True
                self._seen_anything.set()
            if self._waiting:
                with self._cond:
                    self._cond.notify_all()

    def wait_until_connected(self, timeout_s: float) -> bool:
        """True once any message (a heartbeat or a reply) has arrived."""
        return self._seen_anything.wait(timeout_s)

    def wait_for(self, seq: int, timeout_s: float) -> bool:
        """Block until a reply for `seq` or a later frame has arrived."""
        with self._cond:
            self._waiting = True
            try:
                return self._cond.wait_for(lambda: self._scan() >= seq or self.error is not None, timeout_s)
            finally:
                self._waiting = False

    def _scan(self) -> int:
        """The highest frame sequence number among the replies so far (decodes only new ones)."""
        raw = self.raw
        end = len(raw)
        for i in range(self._checked, end):
            row = self._row(raw[i][0], raw[i][1])
            if row is not None and row[0] > self._latest_seq:
                self._latest_seq = row[0]
        self._checked = end
        return self._latest_seq

    def stop(self) -> None:
        self._stop_requested = True
        self.join(timeout=5)

    def rows(self) -> tuple[list[Row], list[Status]]:
        """Every reply decoded, after the run: one row per frame reply, and the heartbeats."""
        rows: list[Row] = []
        statuses: list[Status] = []
        for arrived, parts in self.raw:
            if parts and parts[0] == TOPIC_STATUS:
                try:
                    message = decode(parts)
                except ProtocolError as exc:
                    self._reject(exc.reason)
                    continue
                if isinstance(message, Status):
                    statuses.append(message)
                continue
            row = self._row(arrived, parts)
            if row is not None:
                rows.append(row)
        return rows, statuses

    def _row(self, arrived: int, parts: list[bytes]) -> Row | None:
        topic = parts[0] if parts else b""
        if topic == TOPIC_ECHO:
            try:
                seq = int(msgpack.unpackb(parts[1], raw=False)["seq"])
                t_recv, t_pub = ECHO_STAMPS.unpack(parts[2])
            except (ValueError, KeyError, TypeError, IndexError, struct.error, msgpack.UnpackException) as exc:
                self._reject(f"bad echo reply ({type(exc).__name__})")
                return None
            return (seq, arrived, t_recv, t_pub, -1, 0, 0, t_pub)
        if topic != TOPIC_ACTION:
            return None
        try:
            message = decode(parts)
        except ProtocolError as exc:
            self._reject(exc.reason)
            return None
        if not isinstance(message, Action):
            return None
        return (message.seq, arrived, message.t_recv_ns, message.t_pub_ns, message.index, message.skipped,
                message.dropped, message.t_done_ns)

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        self.last_rejection = reason
