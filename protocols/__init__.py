"""The contract between processes: wire format (msgpack over ZeroMQ), its validation, and the
client library experiment-control code uses. Nothing else in the project defines a wire format.
"""

from protocols.codec import decode, decode_frame, encode, encode_frame
from protocols.errors import ProtocolError
from protocols.messages import (
    SCHEMA_VERSION,
    TOPIC_ACTION,
    TOPIC_EVENT,
    TOPIC_FRAME,
    TOPIC_STATUS,
    Action,
    ControlReply,
    ControlRequest,
    Event,
    FrameHeader,
    Status,
)

__all__ = [
    "SCHEMA_VERSION",
    "TOPIC_ACTION",
    "TOPIC_EVENT",
    "TOPIC_FRAME",
    "TOPIC_STATUS",
    "Action",
    "ControlReply",
    "ControlRequest",
    "Event",
    "FrameHeader",
    "ProtocolError",
    "Status",
    "decode",
    "decode_frame",
    "encode",
    "encode_frame",
]
