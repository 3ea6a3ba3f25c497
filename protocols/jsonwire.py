"""The JSON mirror's wire format: published messages as two parts, ``[topic, UTF-8 JSON]``.

For subscribers that have no msgpack decoder (Bonsai's ZeroMQ nodes, LabVIEW, MATLAB/Octave
with ``jsondecode``). The JSON object carries exactly the keys and values of the msgpack header
(``to_wire()``: ``v`` included), so the two streams say the same thing, and the topic part is
the same ASCII word (``action``, ``event``, ``status``). docs/wire-protocol.md, "JSON mirror".

JSON has no NaN, no infinity and no bytes. The messages never hold them (every float is
validated finite on the way in), but a bug must not put invalid JSON on the wire: a non-finite
number is written as ``null`` (which a reader then refuses, as it would refuse the number) and
bytes as text (UTF-8, undecodable bytes as ``\\xNN``). The output is plain ASCII (other
characters as ``\\uXXXX`` escapes), which every JSON reader takes.
"""

from __future__ import annotations

import json
import math
from typing import Any

from protocols.codec import PublishedMessage
from protocols.errors import ProtocolError
from protocols.messages import PUBLISHED_TYPES, TOPIC_OF
from protocols.types import Parts

MAX_JSON_BYTES = 1024 * 1024
"""Longest JSON payload a reader accepts (a status with every counter is about 2 kB)."""


def _default(value: Any) -> Any:
    """What json cannot write by itself: bytes as text, numpy scalars as Python numbers."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    item = getattr(value, "item", None)  # numpy scalar (np.float32, np.int64, ...)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} cannot be written as JSON")


_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), default=_default)


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (JSON null), at any depth."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (bytes, bytearray, memoryview)):
        return _finite(item())
    return value


def to_json(wire: dict[str, Any]) -> bytes:
    """One header map as compact ASCII JSON; never NaN/Infinity tokens (null instead)."""
    try:
        text = _ENCODER.encode(wire)
    except ValueError:  # a NaN or infinity somewhere (allow_nan=False refused it)
        text = _ENCODER.encode(_finite(wire))
    return text.encode("ascii")


def encode_json(message: PublishedMessage) -> list[bytes]:
    """The mirror's parts of a published message (action, event or status)."""
    return [TOPIC_OF[type(message)], to_json(message.to_wire())]


def _no_constants(name: str) -> Any:
    raise ProtocolError(f"payload holds {name}, which is not JSON")


def decode_json(parts: Parts) -> PublishedMessage:
    """Validate a mirror message with the same rules as the msgpack stream (messages.py)."""
    if len(parts) != 2:
        raise ProtocolError(f"a published message has 2 parts, got {len(parts)}")
    topic, payload = (bytes(p.buffer) if hasattr(p, "buffer") else bytes(p) for p in parts)
    message_type = PUBLISHED_TYPES.get(topic)
    if message_type is None:
        raise ProtocolError(f"unknown topic {topic[:32]!r}")
    if len(payload) > MAX_JSON_BYTES:
        raise ProtocolError(f"JSON payload of {len(payload)} bytes exceeds the {MAX_JSON_BYTES}-byte limit")
    try:
        data = json.loads(payload, parse_constant=_no_constants)
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ProtocolError(f"payload is not valid UTF-8 JSON ({type(exc).__name__})") from None
    return message_type.from_wire(data)
