"""Encode and decode multipart ZeroMQ messages: ``[topic, msgpack header, (pixels)]``.

Frames travel as a small msgpack header plus the raw C-contiguous pixel buffer, sent with
``copy=False`` and rebuilt with ``np.frombuffer``: the pixels are never copied on the way in.
Nothing here ever unpickles, and nothing allocates from a size the sender declared: the
header is length-checked before unpacking and the pixel buffer must match the declared
shape and dtype exactly.
"""

from __future__ import annotations

import operator
import time
from typing import Any

import msgpack
import numpy as np
import zmq

from protocols.errors import ProtocolError
from protocols.messages import (
    FRAME_DTYPES,
    MAX_FRAME_BYTES,
    PUBLISHED_TYPES,
    TOPIC_FRAME,
    TOPIC_OF,
    WIRE_INT_MAX,
    WIRE_INT_MIN,
    Action,
    ControlReply,
    ControlRequest,
    Event,
    FrameHeader,
    Status,
)
from protocols.types import Part, Parts

MAX_HEADER_BYTES = 64 * 1024

_NUMPY_DTYPES = {name: np.dtype(name) for name in FRAME_DTYPES}

PublishedMessage = Action | Event | Status


def _buffer(part: Part) -> memoryview:
    if isinstance(part, zmq.Frame):
        return part.buffer
    return memoryview(part)


def _unpack_header(part: Part) -> Any:
    buf = _buffer(part)
    if buf.nbytes > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {buf.nbytes} bytes exceeds the {MAX_HEADER_BYTES}-byte limit")
    try:
        # Limits bound every container by the (already bounded) header length.
        return msgpack.unpackb(
            buf,
            raw=False,
            strict_map_key=True,
            max_bin_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"header is not valid msgpack ({type(exc).__name__})") from None


def pack_header(wire: dict[str, Any]) -> bytes:
    return msgpack.packb(wire, use_bin_type=True)


# --- frames -----------------------------------------------------------------------------


def encode_frame(header: FrameHeader, pixels: np.ndarray) -> list[Any]:
    """Parts for ``socket.send_multipart(parts, copy=False)``.

    The pixel array goes out as-is (no copy): the caller must not modify it afterwards.
    """
    dtype = str(pixels.dtype)
    if dtype != header.dtype or tuple(pixels.shape) != tuple(header.shape):
        raise ProtocolError(
            f"pixels are {dtype} {tuple(pixels.shape)} but the header says {header.dtype} {tuple(header.shape)}"
        )
    if not pixels.flags.c_contiguous:
        raise ProtocolError("pixels must be C-contiguous (use np.ascontiguousarray)")
    if pixels.nbytes > MAX_FRAME_BYTES:
        raise ProtocolError(
            f"frame of {pixels.nbytes} bytes exceeds the {MAX_FRAME_BYTES}-byte limit (a decoder would never see it)"
        )
    return [TOPIC_FRAME, pack_header(header.to_wire()), pixels]


def decode_frame(parts: Parts) -> tuple[FrameHeader, np.ndarray]:
    """Validate a frame message and view its pixels in place (read-only, zero-copy)."""
    if len(parts) != 3:
        raise ProtocolError(f"a frame message has 3 parts, got {len(parts)}")
    if bytes(_buffer(parts[0])) != TOPIC_FRAME:
        raise ProtocolError("not a frame message (topic)")
    header = FrameHeader.from_wire(_unpack_header(parts[1]))
    dtype = _NUMPY_DTYPES[header.dtype]
    height, width = header.shape
    expected = height * width * dtype.itemsize
    if expected > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {expected} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    buf = _buffer(parts[2])
    if buf.nbytes != expected:
        raise ProtocolError(
            f"pixel buffer has {buf.nbytes} bytes but {header.dtype} {height}x{width} needs {expected}"
        )
    pixels = np.frombuffer(buf, dtype=dtype).reshape(height, width)
    pixels.flags.writeable = False
    return header, pixels


def make_frame_header(
    pixels: np.ndarray,
    seq: int,
    *,
    t_acq_ns: int | None = None,
    channel: int = 0,
    plane: int = 0,
    session: str = "",
) -> FrameHeader:
    """A header describing ``pixels``, stamped with the publish time now."""
    if pixels.ndim != 2:
        raise ProtocolError(f"a frame is 2-D (height, width), got shape {tuple(pixels.shape)}")
    now = time.monotonic_ns()
    # operator.index accepts numpy integers (msgpack does not) and refuses floats.
    return FrameHeader(
        seq=operator.index(seq),
        t_acq_ns=now if t_acq_ns is None else operator.index(t_acq_ns),
        t_pub_ns=now,
        shape=(int(pixels.shape[0]), int(pixels.shape[1])),
        dtype=str(pixels.dtype),
        channel=operator.index(channel),
        plane=operator.index(plane),
        session=session,
    )


# --- actions, events, status ------------------------------------------------------------


def encode(message: PublishedMessage) -> list[bytes]:
    """Parts of a published message (action, event or status)."""
    return [TOPIC_OF[type(message)], pack_header(message.to_wire())]


def decode(parts: Parts) -> PublishedMessage:
    """Validate an action, event or status message."""
    if len(parts) != 2:
        raise ProtocolError(f"a published message has 2 parts, got {len(parts)}")
    topic = bytes(_buffer(parts[0]))
    message_type = PUBLISHED_TYPES.get(topic)
    if message_type is None:
        raise ProtocolError(f"unknown topic {topic[:32]!r}")
    return message_type.from_wire(_unpack_header(parts[1]))


# --- control ------------------------------------------------------------------------------


def encode_control(message: ControlRequest | ControlReply) -> bytes:
    """One control payload; REQ/DEALER clients put an empty delimiter part before it."""
    return pack_header(message.to_wire())


def decode_control_request(part: Part) -> ControlRequest:
    """Validate a control request. A refused one whose ``id`` is itself valid raises a
    ProtocolError carrying that id (``request_id``), so the reply can echo it."""
    data = _unpack_header(part)
    try:
        return ControlRequest.from_wire(data)
    except ProtocolError as exc:
        raise ProtocolError(exc.reason, request_id=_request_id(data)) from None


def _request_id(data: Any) -> int | None:
    if not isinstance(data, dict):
        return None
    value = data.get("id")
    if type(value) is int and WIRE_INT_MIN <= value <= WIRE_INT_MAX:
        return value
    return None


def control_request_id(part: Part) -> int | None:
    """The request's ``id`` if the part is a msgpack map holding a valid one, else None; never
    raises and validates nothing else (the cheap read behind a "busy" refusal)."""
    try:
        return _request_id(_unpack_header(part))
    except ProtocolError:
        return None


BUSY = "busy"


def busy_reply(request_id: int | None, rate_per_s: float) -> ControlReply:
    """The reply to a request over the daemon's control rate limit: not read, not carried out."""
    return ControlReply(
        id=request_id if request_id is not None else 0, ok=False,
        error=f"{BUSY}: more than {rate_per_s:g} control requests per second; not carried out, retry later",
    )


def refusal_reply(exc: ProtocolError) -> ControlReply:
    """The reply to a control request that could not be read: ``ok`` false, the reason, and the
    request's own id when it had a valid one (0 only when it had none)."""
    request_id = exc.request_id if exc.request_id is not None else 0
    return ControlReply(id=request_id, ok=False, error=f"malformed request: {exc.reason}")


def decode_control_reply(part: Part) -> ControlReply:
    return ControlReply.from_wire(_unpack_header(part))
