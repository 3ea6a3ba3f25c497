"""The one exception type every reader of the wire format raises for a malformed message."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A message that does not follow the wire format.

    ``reason`` is a short human-readable description of what is wrong (no payload bytes),
    safe to log and to count. Readers catch this, count it and carry on.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
