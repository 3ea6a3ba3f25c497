"""The control socket: a ROUTER answering status, ping, pause, resume and reload.

Clients are DEALER (or REQ) sockets framing each request as ``[b"", payload]``
(protocols.client.ControlClient). Requests are answered in the order they complete: quick ones
at once, a reload when the new model is loaded and warmed up (other requests keep being
answered meanwhile). A malformed request gets an error reply, with the request's own id when it
had a valid one (0 only when it had none), and is counted; it never takes the socket down.

Frames first: the hot path runs on its own thread, but it shares the interpreter (the GIL) and
the CPUs with this loop, so control work is bounded. A token bucket (``control.rate_per_s``,
``control.burst``) says how many requests are carried out, and no one client (connection) may
use more than ``CLIENT_SHARE`` of it; a request over either is answered at once with ``ok``
false and an error starting ``busy:`` (its id echoed; only the id is read) and counted
(``control_refused_busy``). At most ``control.batch`` requests are read per turn of the loop,
and after a turn that refused one none are read for 1 / rate_per_s: whatever a flood sends
beyond about ``batch x rate_per_s`` per second waits in ZeroMQ's queues (the ROUTER's, then the
sender's) and costs the daemon nothing.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Protocol

import structlog
import zmq
import zmq.asyncio

from decoder.settings import ControlSettings
from decoder.stats import Counters, RateLimiter
from decoder.token_bucket import SharedBuckets
from protocols.codec import busy_reply, control_request_id, decode_control_request, encode_control, refusal_reply
from protocols.errors import ProtocolError
from protocols.messages import ControlReply, ControlRequest

log = structlog.get_logger(__name__)

# The most of the control budget one client (one connection) may use, so that a client flooding
# the socket leaves room for an operator's requests.
CLIENT_SHARE = 0.5


class Controllable(Protocol):
    """What the control socket may ask of the service."""

    def status_report(self) -> dict[str, Any]: ...

    async def pause(self) -> None: ...

    async def resume(self) -> None: ...

    async def reload(self, bundle: Path) -> dict[str, Any]: ...


class ControlServer:
    def __init__(
        self,
        socket: zmq.asyncio.Socket,
        service: Controllable,
        counters: Counters,
        limiter: RateLimiter,
        settings: ControlSettings | None = None,
    ) -> None:
        self.socket = socket
        # NOBLOCK reads and replies through a plain shadow of the same socket: no future per message
        self._sync = zmq.Socket.shadow(socket.underlying)
        self.service = service
        self.counters = counters
        self.limiter = limiter
        self.settings = settings or ControlSettings()
        self.buckets = SharedBuckets(self.settings.rate_per_s, self.settings.burst, CLIENT_SHARE)
        self._reloading = False

    async def serve(self, tasks: asyncio.TaskGroup) -> None:
        """Answer requests until cancelled; slow ones (reload) run as their own tasks."""
        batch = self.settings.batch
        recv = self._sync.recv_multipart
        pause_s = 1.0 / self.settings.rate_per_s
        while True:
            await self.socket.poll(None, zmq.POLLIN)
            refused = False
            for _ in range(batch):
                try:
                    parts = recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                refused |= not await self._one(parts, tasks)
            # Over the limit: read nothing more until a token is due (the rest waits in ZeroMQ).
            await asyncio.sleep(pause_s if refused else 0.0)

    async def _one(self, parts: list[bytes], tasks: asyncio.TaskGroup) -> bool:
        """Answer one request; False if it was refused as busy."""
        self.counters.control_requests += 1
        envelope = self._envelope(parts)
        if envelope is None:
            return True  # nobody to answer (no routing id)
        if not self.buckets.take(parts[0]):
            self.counters.control_refused_busy += 1
            held_back = self.limiter.allow("control-busy")
            if held_back is not None:
                log.warning("control requests over the rate limit refused as busy", rate_per_s=self.settings.rate_per_s,
                            similar_since_last=held_back)
            self._reply(envelope, busy_reply(control_request_id(parts[-1]), self.settings.rate_per_s))
            return False
        try:
            request = decode_control_request(parts[-1])
        except ProtocolError as exc:
            self._bad(exc.reason)
            self._reply(envelope, refusal_reply(exc))
            return True
        if request.cmd == "reload":
            tasks.create_task(self._answer(envelope, request), name="control-reload")
        else:
            await self._answer(envelope, request)
        return True

    def _envelope(self, parts: list[bytes]) -> list[bytes] | None:
        """The routing parts to send a reply back with; None (counted) when there are none."""
        # ROUTER prepends the client's routing id; DEALER/REQ clients add an empty delimiter.
        if len(parts) < 2:
            self._bad("control message without routing id or payload")
            return None
        if len(parts) >= 3 and parts[-2] == b"":
            return parts[:-1]
        return [parts[0], b""]

    def _bad(self, reason: str) -> None:
        self.counters.control_errors += 1
        held_back = self.limiter.allow("control")
        if held_back is not None:
            log.warning("malformed control request", reason=reason, similar_since_last=held_back)

    async def _answer(self, envelope: list[bytes], request: ControlRequest) -> None:
        try:
            data = await self._handle(request)
            reply = ControlReply(id=request.id, ok=True, data=data)
        except ControlRefused as exc:
            self.counters.control_errors += 1
            reply = ControlReply(id=request.id, ok=False, error=str(exc))
        self._reply(envelope, reply)

    async def _handle(self, request: ControlRequest) -> dict[str, Any]:
        cmd = request.cmd
        if cmd == "ping":
            return {"t_ns": time.monotonic_ns()}
        if cmd == "status":
            return self.service.status_report()
        if cmd == "pause":
            await self.service.pause()
            return self.service.status_report()
        if cmd == "resume":
            await self.service.resume()
            return self.service.status_report()
        if cmd == "reload":
            bundle = request.args.get("bundle")
            if not isinstance(bundle, str) or not bundle:
                raise ControlRefused("reload needs args.bundle: the path of a model bundle directory")
            if self._reloading:
                raise ControlRefused("a reload is already in progress")
            self._reloading = True
            try:
                return await self.service.reload(Path(bundle))
            finally:
                self._reloading = False
        raise ControlRefused(f"unknown command {cmd!r}")

    def _reply(self, envelope: list[bytes], reply: ControlReply) -> None:
        try:
            self._sync.send_multipart([*envelope, encode_control(reply)], flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # the client is gone or not reading; ROUTER must never block the daemon
        except (TypeError, ValueError) as exc:  # a reply we built does not encode: a bug, say so
            log.error("control reply failed to encode", error=str(exc), request_id=reply.id)
            self._sync.send_multipart(
                [*envelope, encode_control(ControlReply(id=reply.id, ok=False, error="internal error"))],
                flags=zmq.NOBLOCK,
            )


class ControlRefused(Exception):
    """A control request the daemon declines; the message goes back to the client."""
