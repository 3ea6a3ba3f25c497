"""Shared aliases for the wire format."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Union

import zmq

# What a receive with copy=False hands back, or plain bytes from tests and other clients.
Part = Union[bytes, bytearray, memoryview, zmq.Frame]
Parts = Sequence[Part]

FrameDtype = Literal["uint8", "uint16", "float32"]
DecoderState = Literal["filling", "decoding"]
EventKind = Literal["onset", "offset"]
ServiceState = Literal["starting", "running", "paused", "stopping"]
ControlCommand = Literal["status", "ping", "pause", "resume", "reload"]
