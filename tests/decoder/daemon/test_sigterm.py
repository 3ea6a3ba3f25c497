"""The real daemon process (`python -m decoder`), stopped by a real SIGTERM mid-stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from decoder.decision_log import read_records
from protocols.client import ActionSubscriber, FramePublisher
from protocols.codec import decode
from protocols.messages import Action, Status

REPO = Path(__file__).resolve().parents[3]


def _write_config(path: Path, bundle: Path, frames: str, log: Path) -> None:
    path.write_text(
        f'[model]\nbundle = "{bundle}"\n'
        f'[sockets]\nframes = "{frames}"\nactions = "tcp://127.0.0.1:*"\ncontrol = "tcp://127.0.0.1:*"\n'
        '[backend]\nname = "onnxruntime"\nwarmup_frames = 2\n'
        "[policy]\nheartbeat_interval_s = 0.05\nmax_gap_frames = 1000\n"
        f'[decision_log]\npath = "{log}"\n'
        '[logging]\nformat = "json"\nsummary_interval_s = 0.5\n'
    )


def _start(config: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "decoder", "--config", str(config)],
        cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, **env},
    )


def _wait_ready(proc: subprocess.Popen[str], lines: list[dict[str, Any]]) -> tuple[dict[str, Any], threading.Thread]:
    """Read JSON log lines until the daemon says it is ready; keep reading them in a thread."""
    assert proc.stderr is not None
    ready: dict[str, Any] = {}
    got_ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                line = {"event": raw.rstrip()}
            lines.append(line)
            if line.get("event") == "ready":
                ready.update(line)
                got_ready.set()
        got_ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    assert got_ready.wait(60), "daemon did not become ready"
    assert ready, f"daemon exited before ready: {lines[-5:]}"
    return ready, reader


def test_sigterm_mid_stream_loses_no_published_decision(daemon_bundle: Path, tmp_path: Path, kit: Any) -> None:
    context = zmq.Context()
    publisher = FramePublisher("tcp://127.0.0.1:*", context=context)
    log_path = tmp_path / "decisions.msgpack"
    config = tmp_path / "decoder.toml"
    _write_config(config, daemon_bundle, publisher.endpoint, log_path)
    lines: list[dict[str, Any]] = []
    proc = _start(config)
    subscriber = None
    reader = None
    try:
        ready, reader = _wait_ready(proc, lines)
        subscriber = ActionSubscriber(ready["actions"], context=context)
        subscriber.recv(timeout=10)  # a heartbeat: subscribed
        assert publisher.wait_for_subscriber(10)
        received: list[Any] = []

        frames = kit.frames_for(800)
        for i, frame in enumerate(frames):  # ~300 frames/s, SIGTERM a quarter of the way in
            publisher.publish(frame, seq=i)
            if i == 200:
                proc.send_signal(signal.SIGTERM)
            time.sleep(1 / 300)
        code = proc.wait(timeout=30)
        while True:
            try:
                received.append(subscriber.recv(timeout=1.0))
            except TimeoutError:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if reader is not None:
            reader.join(10)
        assert proc.stderr is not None
        proc.stderr.close()
        if subscriber is not None:
            subscriber.close(0)
        publisher.close(0)
        context.term()

    assert code == 0, lines[-5:]
    events = [line.get("event") for line in lines]
    assert "signal received; shutting down" in events and "stopped" in events
    logged = [decode(parts) for parts in read_records(log_path)]
    # The subscriber joined after the first heartbeat; from then on it saw exactly the log.
    first = logged.index(received[0])
    assert logged[first:] == received
    actions = [m for m in received if isinstance(m, Action)]
    assert 50 < len(actions) and actions[-1].seq < 799, "SIGTERM should have stopped intake mid-stream"
    assert isinstance(logged[-1], Status) and logged[-1].state == "stopping"
    # Per-frame work never reaches the log at the default level: a few lines per state change
    # and summaries, not one per frame.
    assert len(lines) < 40, [line.get("event") for line in lines]


def test_bad_bundle_exits_with_ex_config(tmp_path: Path) -> None:
    config = tmp_path / "decoder.toml"
    _write_config(config, tmp_path / "no-bundle", "tcp://127.0.0.1:1", tmp_path / "d.msgpack")
    result = subprocess.run(
        [sys.executable, "-m", "decoder", "--config", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 78
    assert "does not exist" in result.stderr


def test_bad_config_exits_with_ex_config(tmp_path: Path) -> None:
    config = tmp_path / "decoder.toml"
    config.write_text("[policy]\nmin_confidence = 7\n")
    result = subprocess.run(
        [sys.executable, "-m", "decoder", "--config", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 78
    assert "policy.min_confidence" in result.stderr


def test_sigterm_while_loading_the_model_stops_at_once(daemon_bundle: Path, tmp_path: Path) -> None:
    """A long start-up (here: an absurd warm-up, on a rig: a TensorRT build) is interruptible."""
    config = tmp_path / "decoder.toml"
    _write_config(config, daemon_bundle, "tcp://127.0.0.1:1", tmp_path / "d.msgpack")
    proc = _start(config, ACTIONLOOP_BACKEND__WARMUP_FRAMES="1000000")
    assert proc.stderr is not None
    try:
        lines = []
        for raw in proc.stderr:
            lines.append(json.loads(raw))
            if lines[-1]["event"] == "starting":
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = proc.wait(timeout=20)
        lines += [json.loads(raw) for raw in proc.stderr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert code == 0
    assert time.monotonic() - started < 10
    events = [line["event"] for line in lines]
    assert "startup interrupted by a shutdown request" in events and "ready" not in events


def test_a_second_signal_exits_immediately(monkeypatch: Any, tmp_path: Path) -> None:
    from decoder import service as service_module
    from decoder.service import DecoderService
    from decoder.settings import load_settings

    exits: list[int] = []
    monkeypatch.setattr(service_module.os, "_exit", exits.append)
    service = DecoderService(load_settings(decision_log={"path": tmp_path / "d.msgpack"}))
    service._on_signal(signal.SIGTERM)
    assert service._should_exit.is_set() and exits == []
    service._on_signal(signal.SIGINT)
    assert exits == [1]
