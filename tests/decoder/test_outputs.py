"""TTL lines from events over a real pseudo-terminal (pyserial opens the slave as it would a
USB-serial device): the bytes, the confidence gate, and failures that never raise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from decoder.outputs import OutputConfigError, build_outputs
from decoder.outputs.lines import DOWN, FAILED, UP, LineOutput
from decoder.outputs.serial import SerialLines
from decoder.settings import SettingsError, load_settings
from decoder.stats import Counters
from protocols.messages import Event


def event(kind: str, action: str, confidence: float = 0.9) -> Event:
    return Event(kind=kind, action=action, index=0, seq=1, t_acq_ns=1, t_pub_ns=2, confidence=confidence, model_id="m")


def serial_output(port: str, **section: Any) -> LineOutput:
    settings = load_settings(outputs={"serial": {"port": port, "lines": {"groom": 1, "walk": 5}, **section}})
    serial = settings.outputs.serial
    assert serial is not None
    return LineOutput("serial", SerialLines(serial), serial, Counters())


async def test_onsets_and_offsets_become_bytes_on_the_line(pty_pair: Any) -> None:
    pty = pty_pair()
    out = serial_output(pty.path, min_confidence=0.5)
    await out.start()
    try:
        assert out.state == UP
        assert pty.read(0.1) == b"\x7f"  # opened: all lines low
        for e in (
            event("onset", "groom"),            # line 1 high
            event("onset", "walk", 0.3),        # below min_confidence: held back
            event("offset", "walk"),            # its onset was held back: nothing
            event("onset", "rest"),             # not mapped: nothing
            event("offset", "groom", 0.0),      # offsets are never gated (a reset has confidence 0)
            event("onset", "walk", 0.5),        # at the threshold: line 5 high
        ):
            out.on_event(e)
        assert pty.read(0.1) == b"\x81\x01\x85"
        assert out.counters.output_writes == 4 and out.counters.output_lost == 0
        assert out.report()["lines_high"] == [5]
    finally:
        await out.stop(hot_thread_stopped=True)
    assert pty.read(0.1) == b"\x7f" and out.state == DOWN  # closed: all lines low


async def test_a_pulled_cable_is_counted_and_never_raises(pty_pair: Any) -> None:
    pty = pty_pair()
    out = serial_output(pty.path)
    await out.start()
    assert pty.read(0.1) == b"\x7f"
    pty.unplug()
    out.on_event(event("onset", "groom"))  # the write fails: no exception
    assert out.state == FAILED
    assert (out.counters.output_failures, out.counters.output_lost, out.counters.output_writes) == (1, 1, 1)
    assert "Input/output error" in out.last_error
    out.on_event(event("onset", "walk"))  # while failed: remembered and counted, nothing written
    assert out.counters.output_lost == 2 and out.counters.output_failures == 1
    assert out.report()["lines_high"] == [1, 5]  # restored when the device is back
    await out.stop(hot_thread_stopped=True)


async def test_a_missing_device_is_not_fatal(tmp_path: Path) -> None:
    out = serial_output(str(tmp_path / "ttyACM9"))
    await out.start()
    assert out.state == DOWN and out.open_failures == 1
    assert "ttyACM9" in out.last_error
    out.on_event(event("onset", "groom"))
    assert out.counters.output_lost == 1
    await out.stop(hot_thread_stopped=True)


async def test_reopened_device_gets_all_low_then_the_lines_that_should_be_high(pty_pair: Any, tmp_path: Path) -> None:
    link = tmp_path / "serial-by-id"  # as udev's /dev/serial/by-id links: gone on unplug, back on replug
    first = pty_pair()
    link.symlink_to(first.path)
    out = serial_output(str(link))
    await out.start()
    out.on_event(event("onset", "groom"))
    assert first.read(0.1) == b"\x7f\x81"
    first.unplug()
    link.unlink()
    out.on_event(event("onset", "walk"))
    assert out.state == FAILED
    await out._close()
    out.state = DOWN
    assert not await out._open()  # still unplugged
    second = pty_pair()
    link.symlink_to(second.path)
    assert await out._open()
    out.attach()  # what the hot thread runs once maintain() has opened the device
    assert out.state == UP
    assert second.read(0.1) == b"\x7f\x81\x85"
    await out.stop(hot_thread_stopped=True)


def test_output_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="lines must be 0..126: groom = 127"):
        load_settings(outputs={"serial": {"port": "/dev/ttyACM0", "lines": {"groom": 127}}})
    with pytest.raises(SettingsError, match="outputs.serial.lines"):
        load_settings(outputs={"serial": {"port": "/dev/ttyACM0", "lines": {}}})
    with pytest.raises(SettingsError, match="outputs.serial.port"):
        load_settings(outputs={"serial": {"lines": {"groom": 1}}})
    settings = load_settings(outputs={"serial": {"port": "/dev/ttyACM0", "lines": {"groom": 1, "sniff": 2}}})
    with pytest.raises(OutputConfigError, match="does not have: sniff"):
        build_outputs(settings.outputs, Counters(), ("groom", "walk"))
    assert build_outputs(load_settings().outputs, Counters(), ("groom",)) == []  # none configured: none built


def test_a_missing_device_library_names_the_extra(monkeypatch: Any) -> None:
    import decoder.outputs

    monkeypatch.setitem(decoder.outputs.DRIVERS, "serial", ("decoder.outputs.no_such_driver:Lines", "serial"))
    settings = load_settings(outputs={"serial": {"port": "/dev/ttyACM0", "lines": {"groom": 1}}})
    with pytest.raises(OutputConfigError, match=r"not installed.*actionloop\[serial\]"):
        build_outputs(settings.outputs, Counters(), ("groom",))
