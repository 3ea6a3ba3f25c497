"""The TIFF bridge driving the real decoder daemon: pages appended to TIFF files go in, actions
come out, and every frame is accounted for. The daemon runs in-process (`DecoderService`) on a
tiny exported bundle (the tiny_bundle fixture: an untrained 32 x 32 encoder with a random head,
which checks the plumbing, not decoding accuracy); the bridge learns the frame format from the
daemon's control socket."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zmq
import zmq.asyncio

from protocols.client import AsyncActionSubscriber, FramePublisher
from protocols.messages import Action, Status
from tools.bridges.frame_format import FrameFormat
from tools.bridges.tiff_dir import DirectoryWatch
from tools.bridges.tiff_follow import TiffFollower

SHAPE = (32, 32)
RATE_HZ = 30.0


async def test_the_tiff_bridge_drives_the_real_daemon(tmp_path: Path, tiny_daemon_settings: Callable[..., Any],
                                                      zmq_context: zmq.Context,
                                                      async_zmq_context: zmq.asyncio.Context) -> None:
    from decoder.service import DecoderService

    publisher = FramePublisher("tcp://127.0.0.1:*", context=zmq_context)  # the bridge's, bound; the daemon connects
    service = DecoderService(tiny_daemon_settings(publisher.endpoint))
    task = asyncio.create_task(service.serve(install_signal_handlers=False))
    subscriber: AsyncActionSubscriber | None = None
    stop = threading.Event()
    follow: threading.Thread | None = None
    frames_dir = tmp_path / "acquisition"
    frames_dir.mkdir()
    try:
        await asyncio.wait_for(service.ready.wait(), timeout=60)
        announced = await asyncio.to_thread(FrameFormat.from_daemon, service.endpoints["control"])
        assert (announced.dtype, announced.shape) == (np.dtype("uint16"), SHAPE)
        subscriber = AsyncActionSubscriber(service.endpoints["actions"], context=async_zmq_context)
        while not isinstance(await subscriber.recv(timeout=10), Status):
            pass
        assert await asyncio.to_thread(publisher.wait_for_subscriber, 10.0), "daemon never subscribed"

        follower = TiffFollower(DirectoryWatch(frames_dir), publisher, announced, rate_hz=RATE_HZ)
        follower.baseline()
        follow = threading.Thread(target=follower.run, args=(stop, 0.002, 3600.0), daemon=True)
        follow.start()
        frames = np.random.default_rng(0).integers(0, 4000, size=(40, *SHAPE), dtype=np.uint16)

        def acquire() -> None:  # two files of 20 pages at the imaging rate, plus one page the model cannot take
            for part in range(2):
                with tifffile.TiffWriter(frames_dir / f"file_{part + 1:05d}.tif") as tw:
                    for frame in frames[20 * part:20 * part + 20]:
                        tw.write(frame, metadata=None)
                        time.sleep(1 / RATE_HZ)
                    if part == 0:
                        tw.write(np.zeros((16, 16), np.uint16), metadata=None)  # refused by the bridge

        writer = threading.Thread(target=acquire, daemon=True)
        writer.start()
        actions: list[Action] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while (not actions or actions[-1].seq < 40) and loop.time() < deadline:
            message = await subscriber.recv(timeout=10)
            if isinstance(message, Action):
                actions.append(message)
        writer.join(10)
    finally:
        stop.set()
        if follow is not None:
            follow.join(5)
        service.request_shutdown()
        await asyncio.wait_for(task, timeout=15)
        if subscriber is not None:
            subscriber.close(0)
        publisher.close(0)

    assert follower.counters.published == 40 and follower.counters.refused_frames == 1
    seqs = [a.seq for a in actions]
    assert seqs == sorted(seqs) and seqs[-1] == 40  # 41 frames numbered 0..40, the 16 x 16 one (seq 20) refused
    # every published frame is accounted for: decoded (one action each), or skipped/dropped as counted
    accounted = len(actions) + sum(a.skipped for a in actions) + sum(a.dropped for a in actions)
    assert accounted == 41, (len(actions), [a.skipped for a in actions], [a.dropped for a in actions])
    assert 20 not in seqs and sum(a.dropped for a in actions) == 1  # the refused frame is the daemon's one gap
    decoding = [a for a in actions if a.state == "decoding"]
    assert decoding and all(a.action and len(a.probs) > 0 for a in decoding)
