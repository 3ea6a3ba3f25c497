"""The NI-DAQ output inside the real daemon: the service in-process, frames in through the client
library, decisions out as line writes. No NI hardware or driver here: ``nidaqmx`` is replaced by
the in-test stand-in (``nidaqmx_standin``, tests/decoder/conftest.py) that records each write, so
this tests the daemon's wiring of a writer-thread output (start-up, events, status, a write that
fails on the writer thread while decoding goes on, the reopen, shutdown), not a device. The
LabJack driver shares all of it (decoder/outputs/writer.py) and is tested against its own
stand-in in tests/decoder/test_daq_outputs.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from protocols.bundle import load_bundle
from protocols.messages import Event

N_LINES = 8


def nidaq_section(daemon_bundle: Path) -> dict[str, Any]:
    class_names = load_bundle(daemon_bundle).class_names
    assert len(class_names) <= N_LINES
    return {"physical_lines": f"Dev1/port0/line0:{N_LINES - 1}",
            "lines": {name: i for i, name in enumerate(class_names)}, "reopen_interval_s": 0.05}


def states(events: list[Event], lines: dict[str, int], high: set[int] | None = None) -> list[tuple[int, ...]]:
    """The whole-port write each event makes, starting from the lines in ``high``."""
    high = set(high or ())
    out = []
    for e in events:
        (high.add if e.kind == "onset" else high.discard)(lines[e.action])
        out.append(tuple(int(n in high) for n in range(N_LINES)))
    return out


async def test_decisions_drive_ni_lines_and_a_failed_write_never_stops_decoding(
    start_service: Any, daemon_bundle: Path, kit: Any, nidaqmx_standin: Any
) -> None:
    device = nidaqmx_standin
    section = nidaq_section(daemon_bundle)
    h = await start_service(daemon_bundle, outputs={"nidaq": section})
    frames = kit.frames_for(240, seed=3)
    await h.lockstep(frames[:60])
    await h.drain()
    before = h.events()
    assert len(before) >= 2, "the test frames should make onsets and offsets"
    low = (0,) * N_LINES
    assert await asyncio.to_thread(device.wait_writes, 1 + len(before)) == [low] + states(before, section["lines"])
    assert device.write_threads == {"output-nidaq-writer"}
    report = await h.output_report("nidaq")
    assert report["state"] == "up" and report["device"] == f"NI-DAQmx Dev1/port0/line0:{N_LINES - 1}"
    assert report["counters"]["output_writes"] == 1 + len(before)

    device.fail_writes, device.present = True, False  # unplugged: writes (on the writer thread) and opens fail
    h.received.clear()
    actions = await h.lockstep(frames[60:150], first_seq=60)
    await h.drain()
    assert [a.seq for a in actions] == list(range(60, 150))  # decoding went on, frame for frame
    assert h.events(), "the frames after the failure should make events"
    report = await h.output_report("nidaq")
    assert report["state"] in ("failed", "down", "opening") and report["open_failures"] >= 1
    assert "Device identifier is invalid" in report["last_error"]  # the reopen, tried while unplugged
    assert report["counters"]["output_failures"] == 1  # the write that failed: found once

    written = len(device.writes)  # (a write that fails records nothing)
    device.fail_writes, device.present = False, True  # plugged in again
    for _ in range(100):  # reopen_interval_s is 0.05
        report = await h.output_report("nidaq")
        if report["state"] == "up":
            break
        await asyncio.sleep(0.05)
    assert report["state"] == "up" and report["counters"]["output_reopens"] == 1
    assert len(device.opened) == 2  # a new task on the same lines
    resync, high = [low], set()  # reopened: all low, then each line that should be high, one by one
    for line in report["lines_high"]:
        high.add(line)
        resync.append(tuple(int(n in high) for n in range(N_LINES)))
    h.received.clear()
    await h.lockstep(frames[150:], first_seq=150)
    await h.drain()
    assert h.events()
    expected = resync + states(h.events(), section["lines"], set(report["lines_high"]))
    assert (await asyncio.to_thread(device.wait_writes, written + len(expected)))[written:] == expected

    h.service.request_shutdown()
    await h.task
    assert device.writes[-1] == low  # shutdown: all low
    assert device.closed == device.made > 2  # every task closed: the two that ran and those of failed opens
