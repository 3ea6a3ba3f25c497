"""The control socket through the real AsyncControlClient: status, ping, pause, resume, reload."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from decoder.model import load_model
from protocols.bundle import load_bundle
from protocols.client import AsyncControlClient, ControlError
from protocols.codec import decode_control_reply, encode_control
from protocols.messages import ControlRequest, Event, Status


async def test_ping_and_status(start_service: Any, daemon_bundle: Path, kit: Any) -> None:
    h = await start_service(daemon_bundle)
    await h.lockstep(kit.frames_for(6))
    pong = await h.control.request("ping")
    assert pong.ok and pong.data["t_ns"] > 0
    status = (await h.control.request("status")).data
    assert status["state"] == "running"
    assert status["model_id"] == load_bundle(daemon_bundle).model_id
    assert status["backend"] == "onnxruntime" and status["mode"] == "streaming"
    assert status["window"] == kit.WINDOW and status["window_fill"] == kit.WINDOW
    assert status["frame_shape"] == list(kit.FRAME_SHAPE) and status["frame_dtype"] == "uint16"
    assert status["counters"]["frames_decoded"] == 6
    assert status["latency_us"]["p50_us"] > 0
    assert status["endpoints"]["actions"] == h.service.endpoints["actions"]


async def test_pause_stops_decoding_and_resume_starts_a_fresh_window(start_service: Any, daemon_bundle: Path, kit: Any) -> None:
    h = await start_service(daemon_bundle, policy={"min_duration_s": 0.0, "min_confidence": 0.0})
    frames = kit.frames_for(30)
    await h.lockstep(frames[:8])
    assert any(isinstance(m, Event) and m.kind == "onset" for m in h.received)

    reply = await h.control.request("pause")
    assert reply.data["state"] == "paused"
    await h.drain(quiet_s=0.2)
    # Pausing ends the active action: stimulus hardware must not keep going on a stale decision.
    last_event = h.events()[-1]
    assert last_event.kind == "offset"
    for i in range(8, 14):
        h.publisher.publish(frames[i], seq=i)
    assert [m for m in await h.drain(quiet_s=0.3) if not isinstance(m, Status)] == []

    assert (await h.control.request("resume")).data["state"] == "running"
    after = await h.lockstep(frames[14:20], first_seq=14)
    assert [a.state for a in after[: kit.WINDOW]] == ["filling"] * (kit.WINDOW - 1) + ["decoding"]
    status = (await h.control.request("status")).data
    assert status["counters"]["frames_paused"] == 6
    assert status["counters"]["frames_lost"] == 0  # paused frames were received, not lost
    heartbeat_states = {m.state for m in h.received if isinstance(m, Status)}
    assert {"running", "paused"} <= heartbeat_states


async def test_reload_swaps_the_model_without_losing_frames(
    start_service: Any, daemon_bundle: Path, variant_bundle: Path, kit: Any
) -> None:
    h = await start_service(daemon_bundle)
    frames = kit.frames_for(60)
    old_id, new_id = load_bundle(daemon_bundle).model_id, load_bundle(variant_bundle).model_id
    # Keep frames flowing while the reload loads and warms up the new model.
    reload = asyncio.create_task(h.control.request("reload", timeout=30, bundle=str(variant_bundle)))
    for i, frame in enumerate(frames):
        h.publisher.publish(frame, seq=i)
        await asyncio.sleep(0.01)
    reply = await reload
    assert reply.ok and reply.data["model_id"] == new_id
    await h.drain(quiet_s=0.3)
    actions = h.actions()
    # No frame lost: every frame is decoded or counted as skipped.
    assert len(actions) + sum(a.skipped for a in actions) == len(frames)
    ids = [a.model_id for a in actions]
    assert ids[0] == old_id and ids[-1] == new_id
    swap = ids.index(new_id)
    assert set(ids[:swap]) == {old_id} and set(ids[swap:]) == {new_id}
    # The new model starts from an empty window.
    assert actions[swap].state == "filling"
    status = (await h.control.request("status")).data
    assert status["counters"]["reloads"] == 1 and status["bundle"] == str(variant_bundle.resolve())


async def test_a_bad_bundle_is_refused_and_the_old_model_keeps_running(
    start_service: Any, daemon_bundle: Path, corrupt_bundle: Path, tmp_path: Path, kit: Any
) -> None:
    h = await start_service(daemon_bundle)
    old_id = load_bundle(daemon_bundle).model_id
    with pytest.raises(ControlError, match="checksum mismatch"):
        await h.control.request("reload", timeout=30, bundle=str(corrupt_bundle))
    with pytest.raises(ControlError, match="does not exist"):
        await h.control.request("reload", timeout=30, bundle=str(tmp_path / "nowhere"))
    with pytest.raises(ControlError, match="needs args.bundle"):
        await h.control.request("reload")
    actions = await h.lockstep(kit.frames_for(6))
    assert {a.model_id for a in actions} == {old_id}
    assert actions[-1].state == "decoding"  # the window was not disturbed by the refusals
    status = (await h.control.request("status")).data
    assert status["counters"]["reloads_refused"] == 2 and status["counters"]["reloads"] == 0


async def test_a_bundle_for_other_frames_is_refused(
    start_service: Any, daemon_bundle: Path, float_bundle: Path
) -> None:
    h = await start_service(daemon_bundle)
    with pytest.raises(ControlError, match="restart the daemon to change the frame format"):
        await h.control.request("reload", timeout=30, bundle=str(float_bundle))
    assert (await h.control.request("status")).data["model_id"] == load_bundle(daemon_bundle).model_id


async def test_malformed_control_requests_get_an_error_reply(
    start_service: Any, daemon_bundle: Path, actx: zmq.asyncio.Context
) -> None:
    h = await start_service(daemon_bundle)
    raw = actx.socket(zmq.DEALER)
    raw.linger = 0
    raw.connect(h.service.endpoints["control"])
    try:
        for payload in (b"\xc1garbage", encode_control(ControlRequest(id=5, cmd="ping"))[:-3], b"\x93\x01\x02\x03"):
            await raw.send_multipart([b"", payload])
            assert await raw.poll(5000), "no reply to a malformed request"
            reply = decode_control_reply((await raw.recv_multipart())[-1])
            assert reply.id == 0 and not reply.ok and reply.error.startswith("malformed request")
        # An unknown command is refused by the codec (not one of the five).
        await raw.send_multipart([b"", b"\x83\xa1v\x01\xa2id\x07\xa3cmd\xa4halt"])
        assert await raw.poll(5000)
        assert not decode_control_reply((await raw.recv_multipart())[-1]).ok
        # Still answering well-formed requests afterwards.
        assert (await h.control.request("ping")).ok
    finally:
        raw.close(0)
    status = (await h.control.request("status")).data
    assert status["counters"]["control_errors"] == 4


async def test_control_requests_are_answered_while_a_reload_loads(
    start_service: Any, daemon_bundle: Path, variant_bundle: Path, actx: zmq.asyncio.Context
) -> None:
    def slow_to_load(path: Path, settings: Any) -> Any:
        if path == variant_bundle:
            time.sleep(0.5)  # a big model: seconds of loading and warm-up on a real rig
        return load_model(path, settings)

    h = await start_service(daemon_bundle, model_loader=slow_to_load)
    reload = asyncio.create_task(h.control.request("reload", timeout=30, bundle=str(variant_bundle)))
    other = AsyncControlClient(h.service.endpoints["control"], context=actx)  # a second operator
    try:
        await asyncio.sleep(0.01)
        pings = [await other.request("ping", timeout=5) for _ in range(3)]
        assert all(p.ok for p in pings)
        assert not reload.done(), "the reload should still be loading (pings were not held behind it)"
        with pytest.raises(ControlError, match="already in progress"):
            await other.request("reload", timeout=5, bundle=str(variant_bundle))
    finally:
        other.close()
    assert (await reload).ok


async def test_requests_over_the_rate_limit_are_refused_as_busy_with_their_id(
    start_service: Any, daemon_bundle: Path, actx: zmq.asyncio.Context
) -> None:
    """A burst of 6 from one client against a bucket of 4 tokens at 1 per second, of which one
    client may use half: 2 carried out, 4 refused at once as busy (their ids echoed, malformed
    ones too when their id is readable), all counted; another client's request still finds
    tokens and is carried out."""
    h = await start_service(daemon_bundle, control={"rate_per_s": 1.0, "burst": 4})
    dealer = actx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(h.service.endpoints["control"])
    try:
        payloads = [encode_control(ControlRequest(id=10 + i, cmd="ping")) for i in range(5)]
        payloads.append(b"\x82\xa1v\x01\xa2id\x10")  # {"v": 1, "id": 16}: no cmd, but a readable id
        for payload in payloads:
            await dealer.send_multipart([b"", payload])
        replies = [decode_control_reply((await asyncio.wait_for(dealer.recv_multipart(), 5))[-1]) for _ in payloads]
    finally:
        dealer.close()
    assert [r.id for r in replies] == [10, 11, 12, 13, 14, 16]
    assert [r.ok for r in replies] == [True, True, False, False, False, False]
    assert all(r.error is not None and r.error.startswith("busy:") for r in replies[2:])
    counters = (await h.control.request("status")).data["counters"]
    assert counters["control_refused_busy"] == 4
    assert counters["control_requests"] == 7
    assert counters["control_errors"] == 0  # busy refusals are not errors of the request
