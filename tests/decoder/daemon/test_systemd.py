"""sd_notify over a fake NOTIFY_SOCKET: READY, STATUS, STOPPING and the watchdog.

The service manager is played by a real AF_UNIX datagram socket, bound either to a path or in
the abstract namespace ('@name'), exactly what systemd hands a Type=notify service.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decoder.model import LoadedModel, load_model
from decoder.settings import BackendSettings
from decoder.systemd import SystemdNotifier


class FakeSystemd:
    """Collects every datagram the service sends, stamped on arrival by its own thread."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.settimeout(0.02)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="fake-systemd", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def collect(self) -> list[tuple[float, str]]:
        time.sleep(0.03)  # let datagrams already sent be read
        with self._lock:
            return list(self.messages)

    def fields(self) -> list[str]:
        return [line for _, message in self.collect() for line in message.split("\n")]

    def watchdog_times(self) -> list[float]:
        return [t for t, message in self.collect() if message == "WATCHDOG=1"]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def fake_systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSystemd]:
    address = str(tmp_path / "notify") if request.param == "path" else f"@actionloop-test-{os.getpid()}-{id(request)}"
    fake = FakeSystemd(address)
    yield fake
    fake.close()


def test_notifier_sends_ready_status_and_stopping(fake_systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": fake_systemd.address})
    assert notifier.enabled and notifier.watchdog_interval_s is None
    assert notifier.ready("decoding  model\\nabc")
    assert notifier.status("paused")
    assert notifier.stopping()
    notifier.close()
    fields = fake_systemd.fields()
    assert fields[:2] == ["READY=1", "STATUS=decoding model\\nabc"]
    assert f"MAINPID={os.getpid()}" in fields
    assert "STATUS=paused" in fields and "STOPPING=1" in fields


def test_notifier_is_a_no_op_without_systemd() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert not notifier.ready("x") and not notifier.watchdog()
    assert notifier.watchdog_interval_s is None


def test_watchdog_interval_is_half_of_watchdog_usec_and_respects_watchdog_pid(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "n"), "WATCHDOG_USEC": "3000000"}

    def interval(**extra: str) -> float | None:
        notifier = SystemdNotifier({**env, **extra})
        notifier.close()
        return notifier.watchdog_interval_s if notifier.watchdog_usec is None else notifier.watchdog_usec / 2e6

    assert interval() == 1.5
    assert interval(WATCHDOG_PID=str(os.getpid())) == 1.5
    assert interval(WATCHDOG_PID=str(os.getpid() + 1)) is None  # meant for another process
    assert interval(WATCHDOG_USEC="soon") is None


def test_a_vanished_notify_socket_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.notify("WATCHDOG=1") is False
    notifier.close()


class _BlockingDecoder:
    """A real decoder that hangs inside the model while ``gate`` is closed (a wedged GPU call)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    @property
    def fill(self) -> int:
        return self.inner.fill

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        self.entered.set()
        self.gate.wait()
        return self.inner.push(frame)

    def reset(self) -> None:
        self.inner.reset()


async def test_service_notifies_ready_pings_the_watchdog_and_stops_when_inference_is_stuck(
    start_service: Any, daemon_bundle: Path, kit: Any, fake_systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", fake_systemd.address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # WatchdogSec=0.2: ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    blocking: list[_BlockingDecoder] = []

    def loader(path: Path, settings: BackendSettings) -> LoadedModel:
        model = load_model(path, settings)
        model.decoder = _BlockingDecoder(model.decoder)
        blocking.append(model.decoder)
        return model

    h = await start_service(daemon_bundle, model_loader=loader, policy={"stall_timeout_s": 0.3})
    fields = fake_systemd.fields()
    assert "READY=1" in fields
    await asyncio.sleep(0.6)
    pings = fake_systemd.watchdog_times()
    assert len(pings) >= 4, pings
    intervals = np.diff(pings)
    assert 0.05 < float(np.median(intervals)) < 0.2, intervals

    # Wedge the inference thread: the pings must stop within the stall timeout.
    gate = blocking[0]
    gate.gate.clear()
    h.publisher.publish(kit.frames_for(1)[0], seq=0)
    assert await asyncio.to_thread(gate.entered.wait, 5)
    stuck_at = time.monotonic()
    await asyncio.sleep(1.0)
    late = [t for t in fake_systemd.watchdog_times() if t > stuck_at + 0.3 + 0.15]
    assert late == [], "watchdog kept pinging while inference was stuck"
    assert any(f.startswith("STATUS=inference stuck") for f in fake_systemd.fields())
    status = (await h.control.request("status")).data
    assert status["inference_stalled_s"] > 0.5

    # Unwedge: the frame completes and the pings come back.
    gate.gate.set()
    await h.next_action()
    resumed_at = time.monotonic()
    await asyncio.sleep(0.4)
    assert [t for t in fake_systemd.watchdog_times() if t > resumed_at], "pings did not resume"

    h.service.request_shutdown()
    await h.task
    assert "STOPPING=1" in fake_systemd.fields()


async def test_status_names_the_new_model_right_after_a_reload(
    start_service: Any, daemon_bundle: Path, variant_bundle: Path, fake_systemd: FakeSystemd,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """systemctl status must not name the old model after a reload until the next summary."""
    from protocols.bundle import load_bundle

    monkeypatch.setenv("NOTIFY_SOCKET", fake_systemd.address)
    h = await start_service(daemon_bundle)
    new_id = load_bundle(variant_bundle).model_id[:12]
    await h.control.request("reload", timeout=30, bundle=str(variant_bundle))
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and not any(new_id in f for f in fake_systemd.fields()):
        await asyncio.sleep(0.02)
    statuses = [f for f in fake_systemd.fields() if f.startswith("STATUS=")]
    assert any(new_id in f and "reloaded" in f for f in statuses), statuses
