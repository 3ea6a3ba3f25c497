"""Spec-valid but extreme numbers from a publisher never stop the daemon (issue 14, finding 1).

Frames are written with plain msgpack, as a client built from docs/wire-protocol.md would.
On main, four frames with seq 0, 2**64-1, 0, 2**64-1 pushed ``frames_lost`` and ``dropped``
past what msgpack can carry; the next heartbeat or action raised OverflowError and the daemon
exited 1.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from protocols.messages import SCHEMA_VERSION, WIRE_INT_MAX, Action, Status


def _raw_frame(frame: np.ndarray, seq: int, t_acq_ns: int, t_pub_ns: int) -> list[bytes]:
    header = {"v": SCHEMA_VERSION, "seq": seq, "t_acq_ns": t_acq_ns, "t_pub_ns": t_pub_ns,
              "shape": list(frame.shape), "dtype": str(frame.dtype)}
    return [b"frame", msgpack.packb(header), frame.tobytes()]


async def _heartbeats(h: Any, count: int) -> list[Status]:
    got = []
    while len(got) < count:
        message = await h.next_message()
        if isinstance(message, Status):
            got.append(message)
    return got


async def test_extreme_sequence_numbers_are_counted_and_survived(start_service: Any, daemon_bundle: Path, kit: Any) -> None:
    h = await start_service(daemon_bundle)
    frames = kit.frames_for(8)
    for i, seq in enumerate([0, WIRE_INT_MAX, 0, WIRE_INT_MAX, 0, WIRE_INT_MAX]):
        h.publisher.socket.send_multipart(_raw_frame(frames[i], seq, t_acq_ns=WIRE_INT_MAX - i, t_pub_ns=2**63 + i))
        await asyncio.sleep(0.02)
    # Heartbeats keep coming and the project's own subscriber reads them (it refused counters
    # above INT64_MAX on main).
    (status,) = await _heartbeats(h, 1)
    await _heartbeats(h, 2)
    assert not h.task.done(), "the daemon stopped"
    assert 0 <= status.counters["frames_lost"] <= WIRE_INT_MAX
    extreme = [m for m in h.received if isinstance(m, Action) and m.seq == WIRE_INT_MAX]
    assert extreme and all(0 <= a.dropped <= WIRE_INT_MAX for a in extreme)
    # ... and the valid frames that follow are decoded.
    actions = await h.lockstep(kit.frames_for(kit.WINDOW + 1, seed=3), first_seq=0)
    assert actions[-1].state == "decoding"
    reply = await h.control.request("status")
    assert reply.ok and reply.data["counters"]["sequence_restarts"] >= 3


async def test_arbitrary_spec_valid_headers_leave_the_daemon_decoding(
    start_service: Any, daemon_bundle: Path, kit: Any
) -> None:
    """Seeded draws over the whole documented range (edges weighted), then ordinary frames."""
    h = await start_service(daemon_bundle)
    rng = np.random.default_rng(14)
    edges = [0, 1, 2**53, 2**63 - 1, 2**63, WIRE_INT_MAX - 1, WIRE_INT_MAX]
    frame = kit.frames_for(1)[0]

    def draw() -> int:
        if rng.random() < 0.5:
            return edges[int(rng.integers(len(edges)))]
        return int(rng.integers(0, 2**62, dtype=np.uint64)) * int(rng.integers(1, 4))

    for _ in range(300):
        parts = _raw_frame(frame, draw(), draw(), draw())
        header = msgpack.unpackb(parts[1])
        header.update(channel=int(rng.integers(0, 256)), plane=int(rng.integers(0, 4096)),
                      session="x" * int(rng.integers(0, 129)))
        h.publisher.socket.send_multipart([parts[0], msgpack.packb(header), parts[2]])
    await asyncio.sleep(0.5)
    await _heartbeats(h, 2)
    assert not h.task.done(), "the daemon stopped"
    actions = await h.lockstep(kit.frames_for(kit.WINDOW + 1, seed=4), first_seq=0)
    assert actions[-1].state == "decoding"
    counters = (await h.control.request("status")).data["counters"]
    assert counters["malformed_messages"] == 0, "every header above is spec-valid"
    assert all(0 <= v <= WIRE_INT_MAX for v in counters.values())
