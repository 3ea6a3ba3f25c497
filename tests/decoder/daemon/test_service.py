"""End to end, in-process: the real service, real TCP loopback sockets, the real client library."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

WINDOW = 4  # of the test bundles (conftest.WINDOW)

from decoder.backends import create_backend
from decoder.debounce import Debouncer, frames_for_duration
from decoder.decision_log import read_records
from decoder.model import LoadedModel, load_model
from decoder.service import DecoderService, StartupError
from decoder.settings import BackendSettings
from decoder.streaming import StreamingDecoder
from protocols.bundle import load_bundle
from protocols.codec import decode
from protocols.messages import Action, Event, Status


def offline_probabilities(bundle: Path, frames: np.ndarray) -> list[np.ndarray | None]:
    """The same frames through the same backend and streaming decoder, no daemon involved."""
    backend = create_backend("onnxruntime", bundle, threads=1)
    try:
        stream = StreamingDecoder(backend)
        return [None if (p := stream.push(f)) is None else p.copy() for f in frames]
    finally:
        backend.close()


async def test_actions_match_offline_inference_frame_for_frame(start_service: Any, daemon_bundle: Path, kit: Any) -> None:
    h = await start_service(daemon_bundle)
    frames = kit.frames_for(80, seed=3)
    actions = await h.lockstep(frames)
    expected = offline_probabilities(daemon_bundle, frames)
    bundle = load_bundle(daemon_bundle)

    assert [a.seq for a in actions] == list(range(len(frames)))
    for action, probabilities in zip(actions, expected, strict=True):
        assert action.model_id == bundle.model_id
        assert (action.dropped, action.skipped) == (0, 0)
        assert action.t_acq_ns <= action.t_recv_ns <= action.t_done_ns <= action.t_pub_ns
        if probabilities is None:
            assert (action.state, action.index, action.action, action.probs) == ("filling", -1, "", ())
        else:
            assert action.state == "decoding"
            assert action.index == int(np.argmax(probabilities))
            assert action.action == bundle.class_names[action.index]
            assert action.probs == tuple(probabilities.tolist())  # bit for bit: same backend, same frames
    assert [a.state for a in actions[:WINDOW]] == ["filling"] * (WINDOW - 1) + ["decoding"]
    assert len({a.index for a in actions if a.index >= 0}) > 1, "test frames should make the model change its mind"

    # Events: the same debouncing applied offline to the offline probabilities.
    await h.drain()
    debouncer = Debouncer(0.6, frames_for_duration(0.1, bundle.frame_rate_hz))
    offline_events = []
    for seq, p in enumerate(expected):
        if p is not None:
            offline_events += [(t.kind, bundle.class_names[t.class_index], t.sequence) for t in debouncer.update(p, seq, 0)]
    live_events = [(e.kind, e.action, e.seq) for e in h.events()]
    assert live_events == offline_events
    assert offline_events, "the test model should produce at least one onset"

    # Everything the subscriber got is in the decision log, in the same order.
    h.service.request_shutdown()
    await h.task
    await h.drain(quiet_s=0.2)
    logged = [decode(parts) for parts in read_records(h.service.settings.decision_log.path)]
    published = [m for m in logged if not isinstance(m, Status)]
    received = [m for m in h.received if not isinstance(m, Status)]
    assert published == received
    assert isinstance(logged[-1], Status) and logged[-1].state == "stopping"


async def test_heartbeat_reports_state_counters_and_latency(start_service: Any, daemon_bundle: Path, kit: Any) -> None:
    h = await start_service(daemon_bundle)
    await h.lockstep(kit.frames_for(10))
    statuses: list[Status] = []
    while len(statuses) < 3:
        message = await h.next_message()
        if isinstance(message, Status):
            statuses.append(message)
    last = statuses[-1]
    assert last.state == "running" and last.backend == "onnxruntime" and last.window == WINDOW
    assert last.counters["frames_decoded"] == 10 and last.counters["frames_skipped"] == 0
    assert last.latency_us["p50_us"] > 0 and last.latency_us["max_us"] >= last.latency_us["p99_us"]
    assert last.window_fill == WINDOW
    gaps = [b.t_ns - a.t_ns for a, b in zip(statuses, statuses[1:])]
    assert all(0.02e9 < g < 1.0e9 for g in gaps), gaps


class _SlowDecoder:
    """Wraps a real window decoder and adds a fixed delay per frame (an overloaded machine)."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s

    @property
    def fill(self) -> int:
        return self.inner.fill

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        time.sleep(self.delay_s)
        return self.inner.push(frame)

    def reset(self) -> None:
        self.inner.reset()


def slow_loader(delay_s: float):  # type: ignore[no-untyped-def]
    def load(path: Path, settings: BackendSettings) -> LoadedModel:
        model = load_model(path, settings)
        model.decoder = _SlowDecoder(model.decoder, delay_s)
        return model

    return load


async def test_overload_decodes_the_newest_frame_and_counts_every_skip(start_service: Any, daemon_bundle: Path, kit: Any) -> None:
    h = await start_service(daemon_bundle, model_loader=slow_loader(0.03), policy={"max_gap_frames": 1000})
    frames = kit.frames_for(60)
    for i, frame in enumerate(frames):  # ~3x faster than the daemon can decode
        h.publisher.publish(frame, seq=i)
        await asyncio.sleep(0.01)
    await h.drain(quiet_s=0.5)
    actions = h.actions()
    assert len(actions) < len(frames)
    assert actions[-1].seq == len(frames) - 1, "the newest frame is always decoded"
    # Every frame is accounted for: decoded or reported as skipped in the next action.
    assert len(actions) + sum(a.skipped for a in actions) == len(frames)
    assert sum(a.dropped for a in actions) == 0
    status = (await h.control.request("status")).data
    assert status["counters"]["frames_skipped"] == sum(a.skipped for a in actions)
    assert status["counters"]["frames_decoded"] == len(actions)


async def test_overload_far_past_the_gap_limit_keeps_decisions_coming_flagged_by_their_skips(
    start_service: Any, daemon_bundle: Path, kit: Any
) -> None:
    """~10x the rate the daemon decodes, default gap limit (5): frames the daemon skipped itself
    are not gaps, so after the window fills the decisions carry a class, each one saying by its
    `skipped` count that it was decided over a sparser window (before: every decision reset the
    window and read "filling")."""
    h = await start_service(daemon_bundle, model_loader=slow_loader(0.03))
    frames = kit.frames_for(300)
    for i, frame in enumerate(frames):
        h.publisher.publish(frame, seq=i)
        await asyncio.sleep(0.003)
    await h.drain(quiet_s=0.5)
    actions = h.actions()
    decoded = [a for a in actions if a.state == "decoding"]
    assert len(decoded) >= len(actions) // 2, [a.state for a in actions]
    assert all(a.skipped > 0 for a in decoded[1:-1])  # degraded decisions say so
    assert sum(a.dropped for a in actions) == 0
    assert (await h.control.request("status")).data["counters"]["window_resets"] <= 1


async def test_frames_that_reach_an_idle_daemon_together_are_all_decoded(start_service: Any, daemon_bundle: Path, kit: Any) -> None:
    """Latest-wins skips only frames that arrived while another was being decided: a burst that
    finds the daemon idle (two frames in one TCP read, say) is decoded frame by frame."""
    h = await start_service(daemon_bundle)
    frames = kit.frames_for(40)
    for pair in range(20):
        h.publisher.publish(frames[2 * pair], seq=2 * pair)
        h.publisher.publish(frames[2 * pair + 1], seq=2 * pair + 1)
        await asyncio.sleep(0.05)
    await h.drain(quiet_s=0.3)
    actions = h.actions()
    assert [a.seq for a in actions] == list(range(40))
    assert sum(a.skipped for a in actions) == 0


async def test_decisions_reach_the_log_within_milliseconds(start_service: Any, daemon_bundle: Path, kit: Any) -> None:
    """What a SIGKILL could lose: records reach the file about a millisecond after their send."""
    h = await start_service(daemon_bundle)
    action = (await h.lockstep(kit.frames_for(1)))[0]
    await asyncio.sleep(0.02)
    logged = [decode(parts) for parts in read_records(h.service.settings.decision_log.path)]
    assert action in logged


async def test_upstream_gaps_are_counted_and_a_large_one_resets_the_window(start_service: Any, daemon_bundle: Path, kit: Any) -> None:
    h = await start_service(daemon_bundle, policy={"max_gap_frames": 3})
    frames = kit.frames_for(40)
    await h.lockstep(frames[:10], first_seq=0)  # seq 0..9
    small = await h.lockstep(frames[10:15], first_seq=12)  # 2 lost: tolerated
    assert small[0].dropped == 2 and small[0].state == "decoding"
    large = await h.lockstep(frames[15:25], first_seq=40)  # 23 lost: window starts over
    assert large[0].dropped == 23
    assert [a.state for a in large[:WINDOW]] == ["filling"] * (WINDOW - 1) + ["decoding"]
    status = (await h.control.request("status")).data
    assert status["counters"]["frames_lost"] == 25 and status["counters"]["window_resets"] == 1


async def test_a_publisher_that_restarts_its_sequence_resets_the_window(start_service: Any, daemon_bundle: Path, kit: Any) -> None:
    h = await start_service(daemon_bundle)
    frames = kit.frames_for(20)
    await h.lockstep(frames[:10], first_seq=100)
    again = await h.lockstep(frames[10:], first_seq=0)
    assert again[0].state == "filling" and again[0].dropped == 0
    status = (await h.control.request("status")).data
    assert status["counters"]["sequence_restarts"] == 1 and status["counters"]["frames_lost"] == 0


async def test_shutdown_finishes_the_frame_in_flight(start_service: Any, daemon_bundle: Path, kit: Any) -> None:
    h = await start_service(daemon_bundle, model_loader=slow_loader(0.3))
    h.publisher.publish(kit.frames_for(1)[0], seq=7)
    thread = h.service.thread
    deadline = time.monotonic() + 5
    while thread.busy_since_ns == 0:  # wait until the frame is inside the model
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    h.service.request_shutdown()
    await h.task
    received = await h.drain(quiet_s=0.3)
    assert [m.seq for m in received if isinstance(m, Action)] == [7]
    assert isinstance(received[-1], Status) and received[-1].state == "stopping"


class _ExplodingDecoder(_SlowDecoder):
    def __init__(self, inner: Any, after: int) -> None:
        super().__init__(inner, 0.0)
        self.left = after

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("backend blew up")
        return self.inner.push(frame)


async def test_a_crashed_task_stops_the_service_with_an_error(start_service: Any, daemon_bundle: Path, kit: Any) -> None:
    def loader(path: Path, settings: BackendSettings) -> LoadedModel:
        model = load_model(path, settings)
        model.decoder = _ExplodingDecoder(model.decoder, after=3)
        return model

    h = await start_service(daemon_bundle, model_loader=loader)
    for i, frame in enumerate(kit.frames_for(5)):
        h.publisher.publish(frame, seq=i)
        await asyncio.sleep(0.02)
    with pytest.raises(ExceptionGroup) as info:
        await asyncio.wait_for(h.task, timeout=10)
    assert info.group_contains(RuntimeError, match="backend blew up")
    assert h.service.state == "stopping"
    assert not any(t.name == "hot-path" for t in threading.enumerate())


async def test_bad_bundle_refuses_to_start(tmp_path: Path, corrupt_bundle: Path, kit: Any) -> None:
    service = DecoderService(kit.make_settings(corrupt_bundle, tmp_path, "tcp://127.0.0.1:1"))
    with pytest.raises(StartupError, match="checksum mismatch") as info:
        await service.serve(install_signal_handlers=False)
    assert info.value.exit_code == 78
    assert not service.ready.is_set()


async def test_missing_bundle_setting_refuses_to_start(tmp_path: Path) -> None:
    from decoder.settings import load_settings

    service = DecoderService(load_settings(decision_log={"path": tmp_path / "d.msgpack"}))
    with pytest.raises(StartupError, match="no model bundle configured"):
        await service.serve(install_signal_handlers=False)


async def test_whole_window_mode_decides_like_streaming(start_service: Any, daemon_bundle: Path, kit: Any) -> None:
    """The benchmark's naive baseline re-runs the whole window per frame: same decisions, slower."""
    h = await start_service(daemon_bundle, backend={"mode": "whole_window"})
    frames = kit.frames_for(30, seed=4)
    actions = await h.lockstep(frames)
    expected = offline_probabilities(daemon_bundle, frames)
    assert (await h.control.request("status")).data["mode"] == "whole_window"
    for action, probabilities in zip(actions, expected, strict=True):
        if probabilities is None:
            assert action.state == "filling"
        else:
            assert action.index == int(np.argmax(probabilities))
            np.testing.assert_allclose(action.probs, probabilities, atol=1e-4)


async def test_memory_held_by_the_daemon_does_not_grow_with_frames(start_service: Any, daemon_bundle: Path, kit: Any) -> None:
    """Hours of frames must not accumulate anything: what the daemon's own code holds after 100
    frames and after 400 more is the same (the client side of the test is not counted)."""
    import tracemalloc

    h = await start_service(daemon_bundle)
    frames = kit.frames_for(64)
    await h.lockstep(np.concatenate([frames, frames])[:100])  # warm-up
    only_daemon = [tracemalloc.Filter(True, "*/decoder/*"), tracemalloc.Filter(True, "*/protocols/*")]
    tracemalloc.start()
    try:
        await h.lockstep(np.concatenate([frames] * 2)[:50], first_seq=100)
        before = tracemalloc.take_snapshot().filter_traces(only_daemon)
        await h.lockstep(np.concatenate([frames] * 7)[:400], first_seq=150)
        h.received.clear()
        after = tracemalloc.take_snapshot().filter_traces(only_daemon)
    finally:
        tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert growth < 32 * 1024, [str(s) for s in after.compare_to(before, "lineno")[:5]]


async def test_frame_age_shows_time_spent_in_the_socket_queue_that_the_daemons_own_latency_cannot(
    start_service: Any, daemon_bundle: Path, kit: Any
) -> None:
    """The hot thread held up for 0.3 s between two frames (as a slow mailbox call or a stalled
    CPU would): the frames that queued meanwhile are decided 0.28 s after their publisher sent
    them. The daemon's receive -> publish stays short; the age from the frame's t_pub_ns (same
    host: a loopback endpoint, so frames_clock auto means shared) shows the wait."""
    h = await start_service(daemon_bundle)
    await h.lockstep(kit.frames_for(kit.WINDOW))
    quiet = (await h.control.request("status")).data
    assert quiet["frames_clock"] == "shared"
    assert quiet["latency_us"]["age_max_us"] < 250_000  # lockstep: nothing waited
    busy = h.service.thread.submit(time.sleep, 0.3)
    await asyncio.sleep(0.02)  # the hot thread is inside the call
    for i, frame in enumerate(kit.frames_for(5, seed=1)):
        h.publisher.publish(frame, seq=kit.WINDOW + i)
    await busy
    await h.drain(quiet_s=0.3)
    latency = (await h.control.request("status")).data["latency_us"]
    assert latency["age_max_us"] >= 280_000 * 0.99, latency
    assert latency["max_us"] < 100_000, latency  # what the daemon's own numbers alone would say
    assert latency["age_p50_us"] <= latency["age_p99_us"] <= latency["age_max_us"]


async def test_frame_age_is_not_reported_when_the_publisher_clock_is_separate_or_runs_ahead(
    start_service: Any, daemon_bundle: Path, kit: Any
) -> None:
    from protocols.codec import encode_frame, make_frame_header
    from protocols.messages import FrameHeader

    h = await start_service(daemon_bundle, sockets={"frames_clock": "separate"})
    await h.lockstep(kit.frames_for(2))
    status = (await h.control.request("status")).data
    assert status["frames_clock"] == "separate"
    assert not any(k.startswith("age_") for k in status["latency_us"])

    h2 = await start_service(daemon_bundle, sockets={"frames_clock": "shared"})
    frame = kit.frames_for(1)[0]
    header = make_frame_header(frame, 0)
    wire = header.to_wire()
    wire["t_pub_ns"] = header.t_pub_ns + 10**12  # 1000 s ahead of this host's clock
    h2.publisher.socket.send_multipart(encode_frame(FrameHeader.from_wire(wire), frame), copy=False)
    await h2.next_action()
    for _ in range(100):  # counted just after the action goes out
        status = (await h2.control.request("status")).data
        if status["counters"]["frames_age_negative"]:
            break
        await asyncio.sleep(0.01)
    assert status["counters"]["frames_age_negative"] == 1
    assert "age_max_us" not in status["latency_us"]  # not recorded as an age
