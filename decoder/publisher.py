"""The PUB side: every action, event and status goes out on the socket and into the decision log.

The action socket belongs to the hot-path thread (decoder/hotpath.py) while the service runs:
actions and events are published there as they are decided, and status heartbeats built by the
event loop are handed over encoded (``publish_parts``). ``publish`` sends, then queues the same
wire parts for the decision log, with nothing in between that could fail or wait (a hard kill
between the two calls is the only gap). A PUB socket never blocks: a subscriber that cannot keep
up has its own queue (``sndhwm``) and ZeroMQ drops for that subscriber alone.
"""

from __future__ import annotations

import zmq

from decoder.decision_log import DecisionLogWriter
from decoder.stats import Counters
from protocols.codec import PublishedMessage, encode
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

    def publish_parts(self, parts: list[bytes]) -> None:
        """A status message encoded elsewhere (the event loop's heartbeat)."""
        self.socket.send_multipart(parts, flags=zmq.NOBLOCK)
        if self.log is not None:
            self.log.append(parts)
        self.counters.status_published += 1
