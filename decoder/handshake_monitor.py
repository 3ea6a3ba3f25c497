"""Refused CURVE handshakes leave a trace: counted (``auth_failures``) and logged, rate-limited.

libzmq reports a failed handshake only as a socket-monitor event: the peer never becomes a
connection, so nothing reaches the daemon's code otherwise. Each CURVE socket gets a monitor
(``zmq_socket_monitor``, set up on the thread that owns the socket, before the hot thread
starts) that publishes just the three handshake-failure events on an ``inproc`` PAIR; the event
loop reads those PAIRs. Nothing is added to the per-frame path: libzmq's I/O thread emits the
events and the hot thread never sees them.

- ``EVENT_HANDSHAKE_FAILED_AUTH``: the ZAP handler refused the client (an unknown public key;
  the value is the ZAP status code, 400);
- ``EVENT_HANDSHAKE_FAILED_PROTOCOL``: the handshake broke off (a client without CURVE, or one
  that holds the wrong server key);
- ``EVENT_HANDSHAKE_FAILED_NO_DETAIL``: anything else libzmq does not explain.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import structlog
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from decoder.stats import Counters, RateLimiter
from protocols.messages import saturating_add

log = structlog.get_logger(__name__)

EVENTS = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
REASONS = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "client key not authorized",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake protocol error (a client without CURVE, or with a wrong server key)",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed",
}
_ids = itertools.count()


class HandshakeMonitor:
    """Watches the daemon's CURVE sockets for refused handshakes; ``run`` is a loop task."""

    def __init__(self, context: zmq.asyncio.Context, counters: Counters, limiter: RateLimiter) -> None:
        self._context = context
        self.counters = counters
        self.limiter = limiter
        self._pairs: list[tuple[str, zmq.asyncio.Socket]] = []

    @property
    def watching(self) -> list[str]:
        return [name for name, _ in self._pairs]

    def watch(self, name: str, sock: zmq.Socket[Any]) -> None:
        """Monitor ``sock`` (call on the thread that owns it, before it is handed to another)."""
        address = f"inproc://actionloop-handshake-{next(_ids)}-{name}"
        sock.monitor(address, EVENTS)
        pair = self._context.socket(zmq.PAIR)
        pair.linger = 0
        pair.connect(address)
        self._pairs.append((name, pair))

    async def run(self) -> None:
        """Count and log every refused handshake until cancelled."""
        await asyncio.gather(*(self._read(name, pair) for name, pair in self._pairs))

    async def _read(self, name: str, pair: zmq.asyncio.Socket) -> None:
        while True:
            message = parse_monitor_message(await pair.recv_multipart())
            if message["event"] in REASONS:  # (libzmq may add MONITOR_STOPPED at close)
                self.record(name, message["event"], int(message["value"]), message["endpoint"])

    def record(self, socket_name: str, event: int, value: int, endpoint: bytes) -> None:
        self.counters.auth_failures = saturating_add(self.counters.auth_failures, 1)
        held_back = self.limiter.allow(f"handshake-{socket_name}")
        if held_back is not None:
            log.warning(
                "refused a CURVE handshake", socket=socket_name, reason=REASONS.get(event, f"event {event}"),
                code=value, endpoint=endpoint.decode(errors="replace"), similar_since_last=held_back,
            )

    def close(self) -> None:
        for _, pair in self._pairs:
            pair.close(linger=0)
        self._pairs.clear()
