"""NI-DAQ and LabJack TTL outputs.

No NI hardware or driver here, and no LabJack or LJM library: the first tests use the real
``nidaqmx`` and ``labjack-ljm`` packages as they are on such a machine (installed, their C
libraries missing) and check what can be checked for real: the settings, the wiring in
``DRIVERS``, the missing extra, and that opening fails with a message naming the missing
vendor driver while the output stays harmless. The device-level tests after them run against
in-test stand-ins of the vendor modules (``nidaqmx_standin``, ``ljm_standin`` in conftest.py),
which record the calls the drivers make; they test the drivers' logic (which lines, in what
order, failures, reopening, the hot thread never waiting for a write), not a device.
"""

from __future__ import annotations

import ctypes.util
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from decoder.outputs import OutputConfigError, build_outputs
from decoder.outputs.lines import DOWN, FAILED, UP, LineOutput
from decoder.outputs.writer import MAX_PENDING
from decoder.settings import SettingsError, load_settings, ni_line_names
from decoder.stats import Counters
from protocols.messages import Event

NI = {"physical_lines": "Dev1/port0/line0:3", "lines": {"groom": 1, "walk": 3}}
LJ = {"device_type": "T7", "connection_type": "USB", "identifier": "470012345",
      "physical_lines": ["FIO0", "FIO1", "EIO0", "CIO3"], "lines": {"groom": 1, "walk": 3}}


def event(kind: str, action: str, confidence: float = 0.9) -> Event:
    return Event(kind=kind, action=action, index=0, seq=1, t_acq_ns=1, t_pub_ns=2, confidence=confidence, model_id="m")


def output(name: str, **section: Any) -> LineOutput:
    base = NI if name == "nidaq" else LJ
    settings = load_settings(outputs={name: base | {"reopen_interval_s": 0.05} | section})
    (out,) = build_outputs(settings.outputs, Counters(), ("groom", "walk", "rest"))
    return out


# ---- the real packages, without their C libraries ----------------------------------------


def test_ni_line_ranges_expand_as_nidaqmx_expands_them() -> None:
    nidaqmx_utils = pytest.importorskip("nidaqmx.utils", reason="the nidaq extra is not installed")
    for spec in ("Dev1/port0/line0:7", "Dev1/port0/line7:5, Dev1/port1/line2", "PXI1Slot2/port0/line3",
                 "cDAQ1Mod4/port0/line0:1,cDAQ1Mod4/port0/line5"):
        assert ni_line_names(spec) == nidaqmx_utils.unflatten_channel_string(spec), spec


def test_daq_settings_are_checked() -> None:
    for section, message in (
        (NI | {"physical_lines": "Dev1/port0"}, "not an NI-DAQmx line or line range: 'Dev1/port0'"),
        (NI | {"physical_lines": "Dev1/port0/line0:2"}, "walk = 3: physical_lines names only 3 line"),
        (NI | {"physical_lines": "Dev1/port0/line0:3,Dev1/port0/line2"}, "names a line twice"),
    ):
        with pytest.raises(SettingsError, match=message):
            load_settings(outputs={"nidaq": section})
    for section, message in (
        (LJ | {"physical_lines": ["FIO0", "FIO8", "AIN0"]}, "not LabJack digital lines: 'FIO8', 'AIN0'"),
        (LJ | {"physical_lines": ["FIO0", "FIO1"]}, "walk = 3: physical_lines names only 2 line"),
        (LJ | {"physical_lines": ["FIO0", "EIO1", "CIO2", "DIO9"]}, "EIO1 and DIO9 are both DIO9"),
        (LJ | {"device_type": "U3"}, "outputs.labjack.device_type"),
        (LJ | {"physical_lines": []}, "outputs.labjack.physical_lines"),
    ):
        with pytest.raises(SettingsError, match=message):
            load_settings(outputs={"labjack": section})
    settings = load_settings(outputs={"nidaq": NI, "labjack": LJ | {"physical_lines": ["DIO0", "DIO21", "MIO2", "EIO7"]}})
    assert settings.outputs.nidaq is not None and settings.outputs.labjack is not None
    assert settings.outputs.nidaq.line_names == [f"Dev1/port0/line{n}" for n in range(4)]


def test_drivers_are_wired_and_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nidaqmx", reason="the nidaq extra is not installed")
    pytest.importorskip("labjack.ljm", reason="the labjack extra is not installed")
    settings = load_settings(outputs={"nidaq": NI, "labjack": LJ})
    nidaq, labjack = build_outputs(settings.outputs, Counters(), ("groom", "walk"))
    assert type(nidaq.driver).__name__ == "NidaqLines" and nidaq.driver.description == "NI-DAQmx Dev1/port0/line0:3"
    assert type(labjack.driver).__name__ == "LabjackLines"
    assert labjack.driver.description == "LabJack T7 USB 470012345 FIO0,FIO1,EIO0,CIO3"
    for name, module in (("nidaq", "nidaqmx"), ("labjack", "labjack")):
        monkeypatch.delitem(sys.modules, f"decoder.outputs.{name}")
        monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
        with pytest.raises(OutputConfigError, match=rf"outputs.{name} needs a library.*actionloop\[{name}\]"):
            build_outputs(load_settings(outputs={name: NI if name == "nidaq" else LJ}).outputs, Counters(), ("groom", "walk"))


@pytest.mark.parametrize(("name", "package", "library", "message"), [
    ("nidaq", "nidaqmx", "nidaqmx",
     "cannot open NI-DAQmx Dev1/port0/line0:3: the NI-DAQmx driver is not installed on this machine"),
    ("labjack", "labjack.ljm", "LabJackM",
     "cannot open LabJack T7 USB 470012345 FIO0,FIO1,EIO0,CIO3: "
     "the LabJack LJM library (libLabJackM.so) is not installed on this machine"),
])
async def test_without_the_vendor_driver_the_output_is_unavailable_and_says_so(
    name: str, package: str, library: str, message: str
) -> None:
    pytest.importorskip(package, reason=f"the {name} extra is not installed")
    if ctypes.util.find_library(library):
        pytest.skip(f"the vendor's {library} library is installed on this machine")
    out = output(name)
    await out.start()
    try:
        assert out.state == DOWN and out.open_failures == 1
        assert out.last_error.startswith(message)
        out.on_event(event("onset", "groom"))  # remembered, counted, nothing raised
        assert out.counters.output_lost == 1 and out.report()["lines_high"] == [1]
    finally:
        await out.stop(hot_thread_stopped=True)


def test_the_ljm_packages_complaint_stays_off_the_daemons_stdout() -> None:
    pytest.importorskip("labjack.ljm", reason="the labjack extra is not installed")
    if ctypes.util.find_library("LabJackM"):
        pytest.skip("LJM is installed on this machine")
    code = "import decoder.outputs.labjack as m; import sys; sys.stderr.write(m.LOAD_ERROR)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout == ""  # stdout is the daemon's JSON log under systemd
    assert "Cannot load the LJM library libLabJackM.so" in done.stderr


# ---- device logic, against the stand-ins (no NI or LabJack hardware or driver here) -------


@pytest.fixture(params=["nidaq", "labjack"])
def daq(request: pytest.FixtureRequest) -> tuple[str, Any]:
    """Each test below runs once per driver, with its vendor module replaced by the stand-in."""
    fixture = "nidaqmx_standin" if request.param == "nidaq" else "ljm_standin"
    device = request.getfixturevalue(fixture)
    device.at_open = 0 if request.param == "nidaq" else 1  # LabJack: all low once when opening
    return request.param, device


async def test_events_become_whole_line_states_in_order(daq: tuple[str, Any]) -> None:
    name, device = daq
    out = output(name, min_confidence=0.5)
    await out.start()
    assert out.state == UP
    for e in (
        event("onset", "groom"),        # line 1 high
        event("onset", "walk", 0.3),    # held back
        event("offset", "walk"),        # nothing
        event("onset", "rest"),         # not mapped
        event("offset", "groom", 0.0),  # line 1 low
        event("onset", "walk"),         # line 3 high
        event("offset", "walk"),        # line 3 low
        event("onset", "walk"),         # and high again: two writes, never merged
    ):
        out.on_event(e)
    k = device.at_open
    assert device.wait_writes(k + 6)[k:] == [(0, 0, 0, 0), (0, 1, 0, 0), (0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 0, 0), (0, 0, 0, 1)]
    assert out.counters.output_writes == 6 and out.counters.output_lost == 0
    assert f"output-{name}-writer" in device.write_threads  # (and LabJack's open: its helper thread)
    assert threading.current_thread().name not in device.write_threads  # never the hot thread
    if name == "nidaq":
        assert device.opened == [["Dev1/port0/line0", "Dev1/port0/line1", "Dev1/port0/line2", "Dev1/port0/line3"]]
    else:
        assert device.opened == [("T7", "USB", "470012345")] and device.names == ["FIO0", "FIO1", "EIO0", "CIO3"]
    await out.stop(hot_thread_stopped=True)
    assert device.writes[-1] == (0, 0, 0, 0) and len(device.writes) == k + 7  # shutdown: all low, written
    assert device.closed == 1 and out.state == DOWN


async def test_a_slow_device_never_holds_the_hot_thread(daq: tuple[str, Any]) -> None:
    name, device = daq
    out = output(name)
    await out.start()
    k = device.at_open
    device.wait_writes(k + 1)
    device.gate.clear()  # every write now waits, as a USB round trip would (for ever, here)

    def hot_thread() -> None:
        for _ in range(5):
            out.on_event(event("onset", "groom"))
            out.on_event(event("offset", "groom"))

    thread = threading.Thread(target=hot_thread)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "set_line waited for the device"
    assert len(device.writes) == k + 1 and out.counters.output_writes == 11  # queued, not yet written
    device.gate.set()
    assert device.wait_writes(k + 11)[k + 1:] == [(0, 1, 0, 0), (0, 0, 0, 0)] * 5
    await out.stop(hot_thread_stopped=True)


async def test_a_device_that_falls_behind_fails_without_raising(daq: tuple[str, Any]) -> None:
    name, device = daq
    out = output(name)
    await out.start()
    device.wait_writes(device.at_open + 1)
    device.gate.clear()
    for n in range(MAX_PENDING + 5):
        out.on_event(event("onset" if n % 2 == 0 else "offset", "groom"))
    assert out.state == FAILED and out.counters.output_failures == 1
    assert "line changes are waiting (the device does not keep up)" in out.last_error
    # handed over: the all-low, a full queue and perhaps one the writer already holds; the rest lost
    assert MAX_PENDING + 1 <= out.counters.output_writes <= MAX_PENDING + 2
    assert out.counters.output_writes + out.counters.output_lost == 1 + MAX_PENDING + 5
    device.gate.set()
    await out.stop(hot_thread_stopped=True)


async def test_a_failed_write_is_found_without_an_event_and_the_device_comes_back(daq: tuple[str, Any]) -> None:
    name, device = daq
    out = output(name)
    await out.start()
    out.on_event(event("onset", "walk"))
    k = device.at_open
    device.wait_writes(k + 2)
    device.fail_writes = True
    out.on_event(event("offset", "walk"))  # handed to the writer: fails there, not here
    out.on_event(event("onset", "groom"))
    assert out.state == UP  # the hot thread has not seen it yet
    for _ in range(200):
        if out.driver.failure():
            break
        threading.Event().wait(0.01)
    out.check_failure()  # what maintain() posts to the hot thread
    assert out.state == FAILED and out.counters.output_failures == 1
    assert out.last_error.startswith(f"write to {out.driver.description} failed: ")
    assert ("-201003" if name == "nidaq" else "LJME_RECONNECT_FAILED") in out.last_error
    assert device.closed == 1  # the writer closed the device it used
    out.check_failure()
    assert out.counters.output_failures == 1  # marked once

    await out._close()
    out.state = DOWN
    device.fail_writes, device.present = False, False  # unplugged: opening fails
    assert not await out._open()
    assert out.state == DOWN and ("-200220" if name == "nidaq" else "LJME_DEVICE_NOT_FOUND") in out.last_error
    device.present = True  # plugged in again
    before = len(device.writes)
    assert await out._open()
    out.attach()  # what the hot thread runs once maintain() has opened the device
    assert out.state == UP
    assert device.wait_writes(before + k + 2)[before + k:] == [(0, 0, 0, 0), (0, 1, 0, 0)]  # all low, then groom's line
    await out.stop(hot_thread_stopped=True)
    # NI: the task of the open that failed was closed too (its lines must not stay reserved)
    assert device.closed == (3 if name == "nidaq" else 2)
    assert name != "nidaq" or device.made == 3


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["nidaq", "labjack"])
def test_the_documented_configs_load(name: str, tmp_path: Path) -> None:
    """docs/rig.md's snippet and deploy/decoder.toml's commented example, as an operator copies them."""
    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "docs/rig.md").read_text(), re.S)
    (doc,) = [b for b in blocks if f"[outputs.{name}]" in b]
    lines = (ROOT / "deploy/decoder.toml").read_text().splitlines()
    start = lines.index(f"# [outputs.{name}]")
    example = []
    for line in lines[start:]:
        if not re.match(r"# (\[|\w+ = )", line):
            break
        example.append(line[2:])
    for n, text in enumerate((doc, "\n".join(example))):
        path = tmp_path / f"{n}.toml"
        path.write_text(text)
        section = getattr(load_settings(path).outputs, name)
        assert section is not None and section.lines == {"foreleg_grooming": 0, "forward_walking": 1}


async def test_a_writer_that_outlives_its_close_never_touches_the_next_device(
    nidaqmx_standin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import decoder.outputs.writer

    monkeypatch.setattr(decoder.outputs.writer, "STOP_TIMEOUT_S", 0.1)
    device = nidaqmx_standin
    out = output("nidaq")
    await out.start()
    device.wait_writes(1)
    device.gate.clear()
    out.on_event(event("onset", "groom"))  # this write hangs in the first task
    await out._close()  # gives up waiting for the writer after STOP_TIMEOUT_S
    out.state = DOWN
    assert await out._open()
    out.attach()
    first, second = device.tasks
    assert not first.closed  # still held by its hung write
    device.gate.set()  # the hung write returns: the old writer ends and closes *its* task
    device.wait_writes(4)
    for _ in range(200):
        if first.closed:
            break
        threading.Event().wait(0.01)
    assert first.closed and not second.closed and out.state == UP
    out.on_event(event("offset", "groom"))
    assert device.wait_writes(5)[-1] == (0, 0, 0, 0)
    await out.stop(hot_thread_stopped=True)
    assert second.closed


async def test_a_labjack_line_the_model_lacks_fails_the_open(ljm_standin: Any) -> None:
    device = ljm_standin
    device.lacks = {"CIO3"}
    out = output("labjack")
    await out.start()
    assert out.state == DOWN and out.open_failures == 1 and "LJME_INVALID_NAME" in out.last_error
    assert device.closed == 1 and device.writes == []  # the handle of the failed open closed again
    await out.stop(hot_thread_stopped=True)
