"""The serial TTL output end to end: the real service in-process, frames in through the client
library, pyserial on the slave of a real pseudo-terminal, bytes read from its master; and a
pulled cable (both pty ends closed, the by-id link gone) that the daemon decodes through and
recovers from."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from decoder.service import StartupError
from protocols.bundle import load_bundle
from protocols.messages import Event
from protocols.ttl import line_byte


def serial_section(daemon_bundle: Path, port: Path | str) -> dict[str, Any]:
    class_names = load_bundle(daemon_bundle).class_names
    return {"port": str(port), "lines": {name: i for i, name in enumerate(class_names)}, "reopen_interval_s": 0.05}


def expected_bytes(events: list[Event], lines: dict[str, int]) -> bytes:
    return b"".join(line_byte(lines[e.action], e.kind == "onset") for e in events)


async def test_decision_events_drive_the_serial_lines(
    start_service: Any, daemon_bundle: Path, kit: Any, pty_pair: Any
) -> None:
    pty = pty_pair()
    section = serial_section(daemon_bundle, pty.path)
    h = await start_service(daemon_bundle, outputs={"serial": section})
    assert pty.read(0.1) == b"\x7f"  # opened at start-up: all lines low
    await h.lockstep(kit.frames_for(80, seed=3))
    await h.drain()
    events = h.events()
    assert len(events) >= 2, "the test frames should make onsets and offsets"
    assert await asyncio.to_thread(pty.read) == expected_bytes(events, section["lines"])
    report = await h.output_report("serial")
    assert report["state"] == "up" and report["device"] == f"serial {pty.path} at 115200 baud"
    assert report["counters"]["output_writes"] == len(events) + 1
    assert report["counters"]["output_lost"] == report["counters"]["output_failures"] == 0

    h.service.request_shutdown()
    await h.task
    assert pty.read(0.2) == b"\x7f"  # clean shutdown: all lines low


async def test_a_pulled_cable_never_stops_decoding_and_the_lines_come_back(
    start_service: Any, daemon_bundle: Path, kit: Any, pty_pair: Any, tmp_path: Path
) -> None:
    link = tmp_path / "usb-Teensyduino_USB_Serial-if00"  # as /dev/serial/by-id/...: gone on unplug
    first = pty_pair()
    link.symlink_to(first.path)
    section = serial_section(daemon_bundle, link)
    h = await start_service(daemon_bundle, outputs={"serial": section})
    frames = kit.frames_for(240, seed=3)
    await h.lockstep(frames[:60])
    await h.drain()
    before = h.events()
    assert await asyncio.to_thread(first.read) == b"\x7f" + expected_bytes(before, section["lines"])

    first.unplug()
    link.unlink()
    h.received.clear()
    actions = await h.lockstep(frames[60:150], first_seq=60)
    await h.drain()
    assert [a.seq for a in actions] == list(range(60, 150))  # decoding went on, frame for frame
    assert h.events(), "the frames after the unplug should make events"
    report = await h.output_report("serial")
    assert report["state"] in ("failed", "down", "opening") and link.name in report["last_error"]
    assert report["counters"]["output_failures"] == 1
    assert report["counters"]["output_lost"] == len(h.events())

    second = pty_pair()
    link.symlink_to(second.path)
    for _ in range(100):  # reopen_interval_s is 0.05
        report = await h.output_report("serial")
        if report["state"] == "up":
            break
        await asyncio.sleep(0.05)
    assert report["state"] == "up" and report["counters"]["output_reopens"] == 1
    resync = b"\x7f" + b"".join(line_byte(line, True) for line in report["lines_high"])
    h.received.clear()
    await h.lockstep(frames[150:], first_seq=150)
    await h.drain()
    assert h.events()
    assert await asyncio.to_thread(second.read) == resync + expected_bytes(h.events(), section["lines"])


async def test_lines_for_actions_the_model_lacks_stop_the_start(start_service: Any, daemon_bundle: Path) -> None:
    with pytest.raises(StartupError, match="does not have: sniffing") as info:
        await start_service(daemon_bundle, outputs={"serial": {"port": "/dev/null", "lines": {"sniffing": 0}}})
    assert info.value.exit_code == 78


async def test_a_missing_serial_device_does_not_stop_the_daemon(
    start_service: Any, daemon_bundle: Path, kit: Any, tmp_path: Path
) -> None:
    h = await start_service(daemon_bundle, outputs={"serial": serial_section(daemon_bundle, tmp_path / "ttyACM7")})
    actions = await h.lockstep(kit.frames_for(30, seed=3))
    assert len(actions) == 30
    report = await h.output_report("serial")
    assert report["state"] in ("down", "opening") and report["open_failures"] >= 1
    assert "ttyACM7" in report["last_error"]
