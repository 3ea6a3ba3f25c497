"""Client library for microscope bridges and experiment-control code.

- :class:`FramePublisher`: what a microscope bridge uses to send frames to the decoder.
- :class:`ActionSubscriber` / :class:`AsyncActionSubscriber`: receive actions, events and
  heartbeats, blocking or with asyncio, with a timeout.
- :class:`ControlClient` / :class:`AsyncControlClient`: status, ping, pause, resume, reload.

Every socket is closed with a bounded linger. Malformed messages never raise out of a
subscriber by default: they are counted in ``rejected`` (and the last reason kept in
``last_rejection``) and skipped, so a bad publisher cannot crash experiment code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq
import zmq.asyncio
import zmq.auth

from protocols.codec import (
    BUSY,
    PublishedMessage,
    decode,
    decode_control_reply,
    encode_control,
    encode_frame,
    make_frame_header,
)
from protocols.errors import ProtocolError
from protocols.messages import (
    TOPIC_ACTION,
    TOPIC_EVENT,
    TOPIC_STATUS,
    ControlReply,
    ControlRequest,
    FrameHeader,
)

DEFAULT_LINGER_MS = 100
ALL_PUBLISHED_TOPICS = (TOPIC_ACTION, TOPIC_EVENT, TOPIC_STATUS)


@dataclass(frozen=True)
class CurveClientKeys:
    """CURVE keys of a client: its own key pair and the server's public key (Z85 bytes)."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def from_files(cls, client_secret_file: str | Path, server_public_file: str | Path) -> CurveClientKeys:
        """Load from certificate files made by ``zmq.auth.create_certificates``."""
        public, secret = zmq.auth.load_certificate(str(client_secret_file))
        server_public, _ = zmq.auth.load_certificate(str(server_public_file))
        if secret is None:
            raise ValueError(f"{client_secret_file} holds no secret key (use the .key_secret file)")
        return cls(public=public, secret=secret, server_public=server_public)

    def apply(self, socket: zmq.Socket[Any]) -> None:
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret
        socket.curve_serverkey = self.server_public


def _attach(socket: zmq.Socket[Any], endpoint: str, bind: bool) -> None:
    if bind:
        socket.bind(endpoint)
    else:
        socket.connect(endpoint)


class FramePublisher:
    """Publish 2-photon frames (XPUB, so the sender can wait for its first subscriber).

    ``publish`` sends the pixel buffer without copying it: do not modify an array after
    publishing it (hand over a fresh buffer per frame, as acquisition loops naturally do).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        bind: bool = True,
        session: str = "",
        context: zmq.Context[Any] | None = None,
        send_hwm: int = 100,
        curve: CurveClientKeys | None = None,
    ) -> None:
        self._context = context or zmq.Context.instance()
        self.socket = self._context.socket(zmq.XPUB)
        self.socket.linger = DEFAULT_LINGER_MS
        self.socket.sndhwm = send_hwm
        if curve is not None:
            curve.apply(self.socket)
        _attach(self.socket, endpoint, bind)
        self.session = session
        self.next_seq = 0
        self.subscribers = 0

    @property
    def endpoint(self) -> str:
        return self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def wait_for_subscriber(self, timeout: float = 5.0) -> bool:
        """Block until a subscriber to frames has joined (avoids ZeroMQ's slow-joiner loss)."""
        deadline = time.monotonic() + timeout
        while self.subscribers == 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.socket.poll(int(remaining * 1000), zmq.POLLIN):
                return False
            self._drain_subscriptions()
        return True

    def _drain_subscriptions(self) -> None:
        while self.socket.poll(0, zmq.POLLIN):
            message = self.socket.recv()
            if message[:1] == b"\x01":
                self.subscribers += 1
            elif message[:1] == b"\x00":
                self.subscribers = max(0, self.subscribers - 1)

    def publish(
        self,
        pixels: np.ndarray,
        *,
        seq: int | None = None,
        t_acq_ns: int | None = None,
        channel: int = 0,
        plane: int = 0,
    ) -> FrameHeader:
        """Send one frame; ``seq`` defaults to one more than the last published."""
        if seq is None:
            seq = self.next_seq
        header = make_frame_header(
            pixels, seq, t_acq_ns=t_acq_ns, channel=channel, plane=plane, session=self.session
        )
        self.socket.send_multipart(encode_frame(header, pixels), copy=False)
        self.next_seq = seq + 1
        return header

    def close(self, linger_ms: int = DEFAULT_LINGER_MS) -> None:
        self.socket.close(linger=linger_ms)

    def __enter__(self) -> FramePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SubscriberBase:
    def _setup(
        self,
        socket: zmq.Socket[Any],
        endpoint: str,
        topics: Iterable[bytes],
        bind: bool,
        curve: CurveClientKeys | None,
    ) -> None:
        socket.linger = DEFAULT_LINGER_MS
        if curve is not None:
            curve.apply(socket)
        for topic in topics:
            socket.setsockopt(zmq.SUBSCRIBE, topic)
        _attach(socket, endpoint, bind)
        self.rejected = 0
        self.last_rejection = ""
        self.strict = False

    def _decode_or_count(self, parts: list[bytes]) -> PublishedMessage | None:
        try:
            return decode(parts)
        except ProtocolError as exc:
            if self.strict:
                raise
            self.rejected += 1
            self.last_rejection = exc.reason
            return None


class ActionSubscriber(_SubscriberBase):
    """Blocking subscriber to a decoder's actions, events and status heartbeats."""

    def __init__(
        self,
        endpoint: str,
        *,
        topics: Iterable[bytes] = ALL_PUBLISHED_TOPICS,
        bind: bool = False,
        context: zmq.Context[Any] | None = None,
        curve: CurveClientKeys | None = None,
    ) -> None:
        self.socket = (context or zmq.Context.instance()).socket(zmq.SUB)
        self._setup(self.socket, endpoint, topics, bind, curve)

    def recv(self, timeout: float | None = 1.0) -> PublishedMessage:
        """The next valid message; raises TimeoutError after ``timeout`` seconds (None: wait forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self.socket.poll(wait_ms, zmq.POLLIN):
                raise TimeoutError(f"no message within {timeout} s")
            message = self._decode_or_count(self.socket.recv_multipart())
            if message is not None:
                return message

    def __iter__(self) -> Iterator[PublishedMessage]:
        while True:
            yield self.recv(timeout=None)

    def close(self, linger_ms: int = 0) -> None:
        self.socket.close(linger=linger_ms)

    def __enter__(self) -> ActionSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncActionSubscriber(_SubscriberBase):
    """asyncio subscriber to a decoder's actions, events and status heartbeats."""

    def __init__(
        self,
        endpoint: str,
        *,
        topics: Iterable[bytes] = ALL_PUBLISHED_TOPICS,
        bind: bool = False,
        context: zmq.asyncio.Context | None = None,
        curve: CurveClientKeys | None = None,
    ) -> None:
        self.socket = (context or zmq.asyncio.Context.instance()).socket(zmq.SUB)
        self._setup(self.socket, endpoint, topics, bind, curve)

    async def recv(self, timeout: float | None = 1.0) -> PublishedMessage:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            wait_ms = None if deadline is None else max(0, int((deadline - loop.time()) * 1000))
            if not await self.socket.poll(wait_ms, zmq.POLLIN):
                raise TimeoutError(f"no message within {timeout} s")
            message = self._decode_or_count(await self.socket.recv_multipart())
            if message is not None:
                return message

    def __aiter__(self) -> AsyncActionSubscriber:
        return self

    async def __anext__(self) -> PublishedMessage:
        return await self.recv(timeout=None)

    def close(self, linger_ms: int = 0) -> None:
        self.socket.close(linger=linger_ms)

    async def __aenter__(self) -> AsyncActionSubscriber:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class ControlError(RuntimeError):
    """The decoder answered a control request with ok = false."""


class ControlBusy(ControlError):
    """Refused as busy (over the daemon's control rate limit): not carried out; retry later."""


class _ControlBase:
    """DEALER socket framed like REQ (empty delimiter), so a late reply can never wedge it."""

    def _setup(self, socket: zmq.Socket[Any], endpoint: str, curve: CurveClientKeys | None) -> None:
        socket.linger = 0
        if curve is not None:
            curve.apply(socket)
        socket.connect(endpoint)
        self._next_id = 1

    def _request_parts(self, cmd: str, args: dict[str, Any]) -> tuple[int, list[bytes]]:
        request_id = self._next_id
        self._next_id += 1
        payload = encode_control(ControlRequest(id=request_id, cmd=cmd, args=args))
        return request_id, [b"", payload]

    @staticmethod
    def _matching_reply(parts: list[bytes], request_id: int) -> ControlReply | None:
        if len(parts) != 2 or parts[0] != b"":
            return None
        try:
            reply = decode_control_reply(parts[1])
        except ProtocolError:
            return None
        return reply if reply.id == request_id else None  # a stale reply to a timed-out request


def _checked(reply: ControlReply, cmd: str) -> ControlReply:
    if not reply.ok:
        busy = (reply.error or "").startswith(f"{BUSY}:")
        raise (ControlBusy if busy else ControlError)(f"{cmd} refused: {reply.error}")
    return reply


class ControlClient(_ControlBase):
    """Blocking control client."""

    def __init__(
        self,
        endpoint: str,
        *,
        context: zmq.Context[Any] | None = None,
        curve: CurveClientKeys | None = None,
    ) -> None:
        self.socket = (context or zmq.Context.instance()).socket(zmq.DEALER)
        self._setup(self.socket, endpoint, curve)

    def request(self, cmd: str, timeout: float = 5.0, **args: Any) -> ControlReply:
        """Send a request and wait for its reply; raises TimeoutError, or ControlError if refused."""
        request_id, parts = self._request_parts(cmd, args)
        try:
            # Never block on send: with no usable connection (daemon down, CURVE handshake
            # refused) a DEALER has no pipe and a blocking send would wait forever.
            self.socket.send_multipart(parts, flags=zmq.NOBLOCK)
        except zmq.Again:
            raise TimeoutError(f"cannot send {cmd!r}: no connection to the daemon") from None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.socket.poll(int(remaining * 1000), zmq.POLLIN):
                raise TimeoutError(f"no reply to {cmd!r} within {timeout} s")
            reply = self._matching_reply(self.socket.recv_multipart(), request_id)
            if reply is not None:
                return _checked(reply, cmd)

    def close(self) -> None:
        self.socket.close(linger=0)

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncControlClient(_ControlBase):
    """asyncio control client."""

    def __init__(
        self,
        endpoint: str,
        *,
        context: zmq.asyncio.Context | None = None,
        curve: CurveClientKeys | None = None,
    ) -> None:
        self.socket = (context or zmq.asyncio.Context.instance()).socket(zmq.DEALER)
        self._setup(self.socket, endpoint, curve)

    async def request(self, cmd: str, timeout: float = 5.0, **args: Any) -> ControlReply:
        request_id, parts = self._request_parts(cmd, args)
        try:
            await self.socket.send_multipart(parts, flags=zmq.NOBLOCK)  # see ControlClient.request
        except zmq.Again:
            raise TimeoutError(f"cannot send {cmd!r}: no connection to the daemon") from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self.socket.poll(int(remaining * 1000), zmq.POLLIN):
                raise TimeoutError(f"no reply to {cmd!r} within {timeout} s")
            reply = self._matching_reply(await self.socket.recv_multipart(), request_id)
            if reply is not None:
                return _checked(reply, cmd)

    def close(self) -> None:
        self.socket.close(linger=0)

    async def __aenter__(self) -> AsyncControlClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
