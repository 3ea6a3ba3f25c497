"""Project-wide test fixtures: ZeroMQ contexts that refuse to leak sockets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq
import zmq.asyncio


def _open_sockets(context: zmq.Context) -> list[zmq.Socket]:
    return [s for s in list(getattr(context, "_sockets", ())) if not s.closed]


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context]:
    """A private context; the test fails if it leaves a socket open."""
    context = zmq.Context()
    yield context
    leaked = _open_sockets(context)
    context.destroy(linger=0)
    assert not leaked, f"{len(leaked)} ZeroMQ socket(s) left open: {leaked}"


@pytest.fixture
def async_zmq_context() -> Iterator[zmq.asyncio.Context]:
    context = zmq.asyncio.Context()
    yield context
    leaked = _open_sockets(context)
    context.destroy(linger=0)
    assert not leaked, f"{len(leaked)} ZeroMQ socket(s) left open: {leaked}"


def _bind_random(socket: zmq.Socket) -> str:
    socket.bind("tcp://127.0.0.1:*")
    return socket.getsockopt_string(zmq.LAST_ENDPOINT)


@pytest.fixture
def bind_random():
    """``bind_random(socket) -> endpoint``: bind to a random loopback port, return where."""
    return _bind_random
