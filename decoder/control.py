"""The control socket: a ROUTER answering status, ping, pause, resume and reload.

Clients are DEALER (or REQ) sockets framing each request as ``[b"", payload]``
(protocols.client.ControlClient). Requests are answered in the order they complete: quick ones
at once, a reload when the new model is loaded and warmed up (other requests keep being
answered meanwhile). A malformed request gets an error reply, with the request's own id when it
had a valid one (0 only when it had none), and is counted; it never takes the socket down.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Protocol

import structlog
import zmq
import zmq.asyncio

from decoder.stats import Counters, RateLimiter
from protocols.codec import decode_control_request, encode_control, refusal_reply
from protocols.errors import ProtocolError
from protocols.messages import ControlReply, ControlRequest

log = structlog.get_logger(__name__)


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
    ) -> None:
        self.socket = socket
        self.service = service
        self.counters = counters
        self.limiter = limiter
        self._reloading = False

    async def serve(self, tasks: asyncio.TaskGroup) -> None:
        """Answer requests until cancelled; slow ones (reload) run as their own tasks."""
        while True:
            parts = await self.socket.recv_multipart()
            self.counters.control_requests += 1
            envelope, request, refusal = self._parse(parts)
            if envelope is None:
                continue  # nobody to answer (no routing id)
            if request is None:
                if refusal is not None:
                    self._reply(envelope, refusal)
                continue
            if request.cmd == "reload":
                tasks.create_task(self._answer(envelope, request), name="control-reload")
            else:
                await self._answer(envelope, request)

    def _parse(self, parts: list[bytes]) -> tuple[list[bytes] | None, ControlRequest | None, ControlReply | None]:
        """(envelope, request, refusal): the request, or the refusal to send back for it."""
        # ROUTER prepends the client's routing id; DEALER/REQ clients add an empty delimiter.
        if len(parts) < 2:
            self._bad("control message without routing id or payload")
            return None, None, None
        if len(parts) >= 3 and parts[-2] == b"":
            envelope = parts[:-1]
        else:
            envelope = [parts[0], b""]
        try:
            return envelope, decode_control_request(parts[-1]), None
        except ProtocolError as exc:
            self._bad(exc.reason)
            return envelope, None, refusal_reply(exc)

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
            self.socket.send_multipart([*envelope, encode_control(reply)], flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # the client is gone or not reading; ROUTER must never block the daemon
        except (TypeError, ValueError) as exc:  # a reply we built does not encode: a bug, say so
            log.error("control reply failed to encode", error=str(exc), request_id=reply.id)
            self.socket.send_multipart(
                [*envelope, encode_control(ControlReply(id=reply.id, ok=False, error="internal error"))],
                flags=zmq.NOBLOCK,
            )


class ControlRefused(Exception):
    """A control request the daemon declines; the message goes back to the client."""
