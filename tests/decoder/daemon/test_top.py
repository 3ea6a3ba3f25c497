"""`actionloop top`: the real service in-process, the view reading its heartbeats and events
through the real client library, in-process (`--once`) and as its own process (live, Ctrl-C)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from protocols.messages import Event, Status
from tools.top import View, render

REPO = Path(__file__).resolve().parents[3]


def _status(t_s: float, uptime_s: float, **counters: int) -> Status:
    return Status(t_ns=int(t_s * 1e9), state="running", uptime_s=uptime_s, model_id="m" * 64, backend="onnxruntime",
                  window=4, window_fill=4, counters=counters, latency_us={"p50_us": 300.0, "p99_us": 900.0})


def _event(kind: str, action: str, seq: int) -> Event:
    return Event(kind=kind, action=action, index=1, seq=seq, t_acq_ns=seq, t_pub_ns=seq, confidence=0.9,
                 model_id="m" * 64, duration_ns=1_500_000_000 if kind == "offset" else 0)


async def test_top_once_shows_the_model_and_the_frame_counts(start_service, daemon_bundle: Path, kit, cli,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    h = await start_service(daemon_bundle)
    await h.lockstep(kit.frames_for(12))
    await h.lockstep(kit.frames_for(6, seed=3), first_seq=14)  # 12 and 13 lost upstream
    code = await asyncio.to_thread(cli, ["top", "--once", "--endpoint", h.service.endpoints["actions"]])
    out = capsys.readouterr().out
    assert code == 0
    model = h.service.model
    assert model is not None
    assert f"model     {model.model_id}" in out
    assert "state     running" in out
    assert "frames    received 18  decoded 18  skipped 0  lost 2" in out
    assert "frames/s  received " in out  # two heartbeats seen: rates shown
    assert "waiting for" not in out and "NO STATUS" not in out
    p50_ms = h.service.monitor.latency_summary()["p50_us"] / 1000
    assert "receive->publish p50 " in out and "p50 -" not in out and p50_ms > 0


async def test_top_once_without_a_daemon_says_what_it_waits_for(cli, capsys: pytest.CaptureFixture[str]) -> None:
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    code = await asyncio.to_thread(cli, ["top", "--once", "--timeout", "0.3", "--endpoint", endpoint])
    captured = capsys.readouterr()
    assert code == 2
    assert f"waiting for {endpoint}" in captured.out
    assert f"no status from {endpoint} within 0.3 s" in captured.err


async def test_top_waits_for_the_daemon_then_follows_it_live_and_stops_on_ctrl_c(
    start_service, daemon_bundle: Path, kit
) -> None:
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.cli", "top", "--endpoint", endpoint, "--interval", "0.1",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        screen = await _read_until(proc, f"waiting for {endpoint}")  # no daemon yet: says so, keeps trying
        h = await start_service(daemon_bundle, sockets={"actions": endpoint})
        model = h.service.model
        assert model is not None
        await _read_until(proc, model.model_id)
        await h.lockstep(kit.frames_for(36))
        await h.drain(0.2)
        assert h.events(), "the test model makes no onsets on these frames"
        last = h.events()[-1]
        screen = await _read_until(proc, "frames    received 36  decoded 36")
        while f"{last.kind:<6} {last.action}" not in screen:  # the newest event, on a later redraw
            screen = await _read_until(proc, "frames    received 36")
        assert "events    last 8, newest first" in screen
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0  # Ctrl-C: a clean exit
        stderr = await proc.stderr.read()  # type: ignore[union-attr]
        assert b"Traceback" not in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_rates_come_from_the_counters_of_successive_heartbeats() -> None:
    view = View("tcp://x:1")
    view.add(_status(100.0, 10.0, frames_received=0, frames_decoded=0), now=1.0, wall=0.0)
    assert view.rates() == {}
    assert "frames/s  - (after the next heartbeat)" in render(view, now=1.0, wall=0.0)
    view.add(_status(101.0, 11.0, frames_received=30, frames_decoded=28, frames_skipped=2), now=2.0, wall=0.0)
    view.add(_status(102.0, 12.0, frames_received=60, frames_decoded=58, frames_skipped=2, frames_lost=4), now=3.0,
             wall=0.0)
    assert view.rates() == {"frames_received": 30.0, "frames_decoded": 29.0, "frames_skipped": 1.0, "frames_lost": 2.0}
    for t in range(103, 110):  # only the last few seconds count
        view.add(_status(float(t), t - 90.0, frames_received=60 + (t - 102) * 10), now=t - 99.0, wall=0.0)
    assert view.rates()["frames_received"] == pytest.approx(10.0)
    assert (view.history[-1][0] - view.history[0][0]) / 1e9 <= 5.0


def test_a_restarted_daemon_starts_the_rates_again() -> None:
    view = View("tcp://x:1")
    view.add(_status(100.0, 50.0, frames_received=5000), now=1.0, wall=0.0)
    view.add(_status(101.0, 51.0, frames_received=5030), now=2.0, wall=0.0)
    view.add(_status(5.0, 0.5, frames_received=0), now=3.0, wall=0.0)  # a new process
    assert view.rates() == {}  # never a negative rate


def test_silent_heartbeats_and_events_are_shown() -> None:
    view = View("tcp://x:1", max_events=2)
    view.add(_status(100.0, 10.0), now=1.0, wall=0.0)
    view.add(_event("onset", "walk", 10), now=1.5, wall=0.0)
    screen = "\n".join(render(view, now=2.0, wall=0.0))
    assert "active    walk for 0.5 s" in screen and "onset  walk" in screen and "NO STATUS" not in screen
    view.add(_event("offset", "walk", 50), now=2.5, wall=0.0)
    view.add(_event("onset", "groom", 51), now=2.6, wall=0.0)
    screen = "\n".join(render(view, now=2.7, wall=0.0))
    assert "active    groom" in screen and "lasted 1.50 s" in screen
    assert "frame 10 " not in screen  # only the last two events are kept
    screen = "\n".join(render(view, now=1.0 + 10.0, wall=0.0))
    assert "NO STATUS for 10 s" in screen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _read_until(proc: asyncio.subprocess.Process, text: str, timeout: float = 20.0) -> str:
    """Read snapshots (plain text, blank-line separated: stdout is not a terminal) until one holds ``text``."""
    assert proc.stdout is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    screen: list[str] = []
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), max(0.1, deadline - loop.time()))
        assert line, f"top exited: {(await proc.stderr.read()).decode()[-2000:]}"  # type: ignore[union-attr]
        decoded = line.decode().rstrip("\n")
        if decoded:
            screen.append(decoded)
            continue
        joined = "\n".join(screen)
        if text in joined:
            return joined
        screen = []
