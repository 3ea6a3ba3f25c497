"""The PUB side: every action, event and status goes out on the socket and into the decision log.

The action socket belongs to the hot-path thread (decoder/hotpath.py) while the service runs:
actions and events are published there as they are decided, and status heartbeats built by the
event loop are handed over encoded (``publish_parts``). ``publish`` sends, then queues the same
wire parts for the decision log, with nothing in between that could fail or wait (a hard kill
between the two calls is the only gap). A PUB socket never blocks: a subscriber that cannot keep
up has its own queue (``sndhwm``) and ZeroMQ drops for that subscriber alone.

``MirroredPublisher`` (only when ``sockets.json_mirror`` is set) also sends every message as
JSON on a second PUB socket owned by the same thread: no thread hop, one encode and one
non-blocking send more per message. Without the mirror the plain ``Publisher`` runs, unchanged.
"""

from __future__ import annotations

import zmq

from decoder.decision_log import DecisionLogWriter
from decoder.stats import Counters
from protocols.codec import PublishedMessage, encode
from protocols.jsonwire import encode_json
from protocols.messages import Action, Event


class Publisher:
    def __init__(self, socket: zmq.Socket, log: DecisionLogWriter | None, counters: Counters) -> None:  # type: ignore[type-arg]
        self.socket = socket
        self.log = log
        self.counters = counters

    def publish(self, message: PublishedMessage) -> None:
        parts = encode(message)
        self.socket.send_multipart(parts, flags=zmq.NOBLOCK)
        if self.log is not None:
            self.log.append(parts)
        if isinstance(message, Action):
            self.counters.actions_published += 1
        elif isinstance(message, Event):
            self.counters.events_published += 1
        else:
            self.counters.status_published += 1

    def publish_parts(self, parts: list[bytes], mirror_parts: list[bytes] | None = None) -> None:
        """A status message encoded elsewhere (the event loop's heartbeat); ``mirror_parts``:
        its ``mirror_encode``, for the JSON mirror."""
        self.socket.send_multipart(parts, flags=zmq.NOBLOCK)
        if self.log is not None:
            self.log.append(parts)
        self.counters.status_published += 1

    def mirror_encode(self, message: PublishedMessage) -> list[bytes] | None:
        """What ``publish_parts`` needs for the mirror; None: there is no mirror."""
        return None


class MirroredPublisher(Publisher):
    """Every message also as ``[topic, JSON]`` on ``mirror`` (protocols/jsonwire.py)."""

    def __init__(self, socket: zmq.Socket, log: DecisionLogWriter | None, counters: Counters,  # type: ignore[type-arg]
                 mirror: zmq.Socket) -> None:  # type: ignore[type-arg]
        super().__init__(socket, log, counters)
        self.mirror = mirror

    def publish(self, message: PublishedMessage) -> None:
        super().publish(message)  # msgpack first: the mirror never delays the main stream
        self.mirror.send_multipart(encode_json(message), flags=zmq.NOBLOCK)

    def publish_parts(self, parts: list[bytes], mirror_parts: list[bytes] | None = None) -> None:
        super().publish_parts(parts)
        if mirror_parts is not None:
            self.mirror.send_multipart(mirror_parts, flags=zmq.NOBLOCK)

    def mirror_encode(self, message: PublishedMessage) -> list[bytes] | None:
        return encode_json(message)
