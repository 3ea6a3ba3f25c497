"""The JSON mirror, end to end: the real service in-process, frames in through the client
library, a plain ZeroMQ SUB reading ``[topic, JSON]`` with ``json.loads`` beside the msgpack
subscriber; both streams must carry the same messages with the same fields."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from decoder.publisher import MirroredPublisher, Publisher
from decoder.settings import load_settings
from protocols.jsonwire import decode_json
from protocols.messages import TOPIC_OF, Event, Status

REPO = Path(__file__).resolve().parents[3]


def _strict_loads(payload: bytes) -> Any:
    """json.loads that refuses NaN/Infinity tokens, as strict readers (Octave, browsers) do."""
    def refuse(name: str) -> Any:
        raise AssertionError(f"invalid JSON token {name}")

    return json.loads(payload.decode("utf-8"), parse_constant=refuse)


async def _read_until_quiet(sub: zmq.asyncio.Socket, quiet_s: float) -> list[list[bytes]]:
    """Everything until nothing but heartbeats arrives for ``quiet_s`` (or nothing at all)."""
    got: list[list[bytes]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + quiet_s
    while (remaining := deadline - loop.time()) > 0:
        try:
            parts = await asyncio.wait_for(sub.recv_multipart(), remaining)
        except TimeoutError:
            break
        got.append(parts)
        if parts[0] != b"status":
            deadline = loop.time() + quiet_s
    return got


async def test_json_mirror_carries_the_same_messages_as_msgpack(
    start_service: Any, daemon_bundle: Path, kit: Any, actx: zmq.asyncio.Context
) -> None:
    h = await start_service(daemon_bundle, sockets={"json_mirror": "tcp://127.0.0.1:*"})
    assert isinstance(h.service.publisher, MirroredPublisher)
    endpoint = h.service.endpoints["json_mirror"]
    assert endpoint.startswith("tcp://127.0.0.1:") and endpoint != h.service.endpoints["actions"]
    sub = actx.socket(zmq.SUB)
    sub.linger = 0
    sub.subscribe(b"")
    sub.connect(endpoint)
    try:
        # connected once a heartbeat comes through; frames go out only after that
        while (await asyncio.wait_for(sub.recv_multipart(), 5.0))[0] != b"status":
            pass
        h.received.clear()
        await h.lockstep(kit.frames_for(80, seed=3))
        await h.drain()
        mirrored = await _read_until_quiet(sub, 0.3)

        assert all(len(parts) == 2 for parts in mirrored)
        as_json = [(parts[0], _strict_loads(parts[1])) for parts in mirrored]
        # Actions and events: the same messages in the same order, every field equal.
        json_decisions = [(t, d) for t, d in as_json if t != b"status"]
        msgpack_decisions = [(TOPIC_OF[type(m)], m.to_wire()) for m in h.received if not isinstance(m, Status)]
        assert json_decisions == msgpack_decisions
        assert sum(t == b"action" for t, _ in json_decisions) == 80
        assert any(isinstance(m, Event) for m in h.received), "the test frames should make events"
        # The Python reader of the mirror gives the very same message objects.
        decoded = [decode_json(parts) for parts in mirrored if parts[0] != b"status"]
        assert decoded == [m for m in h.received if not isinstance(m, Status)]
        # Heartbeats: each JSON one is a msgpack one (matched by its timestamp), field for field.
        msgpack_status = {m.t_ns: m.to_wire() for m in h.received if isinstance(m, Status)}
        json_status = [d for t, d in as_json if t == b"status"]
        matched = [d for d in json_status if d["t_ns"] in msgpack_status]
        assert matched, "no heartbeat seen on both streams"
        assert all(d == msgpack_status[d["t_ns"]] for d in matched)
        assert set(json_status[0]) == set(Status.FIELDS) | {"v"}

        # The last status at shutdown goes out on the mirror too.
        h.service.request_shutdown()
        await h.task
        tail = await _read_until_quiet(sub, 0.5)
        last = _strict_loads(tail[-1][1])
        assert tail[-1][0] == b"status" and last["state"] == "stopping"
    finally:
        sub.close(0)


async def test_json_mirror_is_off_by_default(start_service: Any, daemon_bundle: Path) -> None:
    h = await start_service(daemon_bundle)
    assert h.service.settings.sockets.json_mirror is None
    assert type(h.service.publisher) is Publisher  # the unmirrored publisher: nothing added per message
    assert "json_mirror" not in h.service.endpoints
    reply = await h.control.request("status")
    assert set(reply.data["endpoints"]) == {"frames", "actions", "control"}


def test_json_mirror_setting(monkeypatch: Any) -> None:
    assert load_settings(REPO / "deploy" / "decoder.toml").sockets.json_mirror is None  # commented out there
    monkeypatch.setenv("ACTIONLOOP_SOCKETS__JSON_MIRROR", "tcp://127.0.0.1:5558")
    assert load_settings().sockets.json_mirror == "tcp://127.0.0.1:5558"
    monkeypatch.setenv("ACTIONLOOP_SOCKETS__JSON_MIRROR", "")
    assert load_settings().sockets.json_mirror is None
