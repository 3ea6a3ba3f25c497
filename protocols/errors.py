"""The one exception type every reader of the wire format raises for a malformed message."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A message that does not follow the wire format.

    ``reason`` is a short human-readable description of what is wrong (no payload bytes),
    safe to log and to count. Readers catch this, count it and carry on.
    ``request_id``: for a refused control request that still carried a valid ``id``, that id,
    so the refusal can echo it (``protocols.codec.refusal_reply``); None otherwise.
    """

    def __init__(self, reason: str, request_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id
