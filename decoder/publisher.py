"""The PUB side: every action, event and status goes out on the socket and into the decision log.

``publish`` is synchronous and has no await in it, so inside the event loop a message is either
both sent and logged or neither (a hard kill between the two system calls is the only gap).
A PUB socket never blocks: a subscriber that cannot keep up has its own queue (``sndhwm``)
and ZeroMQ drops for that subscriber alone.
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
