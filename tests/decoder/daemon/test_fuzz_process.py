"""Fuzzing the real daemon process (issue 14, "Done when"): 20,000 messages per seed, random
malformed and spec-valid-but-extreme frame headers written with plain msgpack as a client built
from docs/wire-protocol.md would; the daemon must stay up, count them, keep its memory flat,
decode the valid frames that follow and stop cleanly on SIGTERM.

Slow (about 10 s per seed on 2 cores); `.ci/run` runs it.
"""

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

import msgpack
import numpy as np
import pytest
import zmq

from protocols.client import ActionSubscriber, ControlClient, FramePublisher
from protocols.messages import SCHEMA_VERSION, WIRE_INT_MAX, Action, Status

REPO = Path(__file__).resolve().parents[3]
MESSAGES = 20_000
EDGES = [0, 1, 2**31, 2**53, 2**53 + 1, 2**63 - 1, 2**63, WIRE_INT_MAX - 1, WIRE_INT_MAX]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class _Fuzzer:
    def __init__(self, seed: int, frame: np.ndarray) -> None:
        self.rng = np.random.default_rng(seed)
        self.frame = frame
        self.kinds: dict[str, int] = {}

    def u64(self) -> int:
        if self.rng.random() < 0.5:
            return EDGES[int(self.rng.integers(len(EDGES)))]
        return int(self.rng.integers(0, 2**63, dtype=np.uint64)) * int(self.rng.integers(1, 3))

    def valid_header(self, shape: tuple[int, int], dtype: str) -> dict[str, Any]:
        header: dict[str, Any] = {"v": SCHEMA_VERSION, "seq": self.u64(), "t_acq_ns": self.u64(),
                                  "t_pub_ns": self.u64(), "shape": list(shape), "dtype": dtype}
        if self.rng.random() < 0.5:
            header.update(channel=int(self.rng.integers(0, 256)), plane=int(self.rng.integers(0, 4096)),
                          session="s" * int(self.rng.integers(0, 129)))
        if self.rng.random() < 0.2:
            header["future_field"] = {"x": self.u64()}  # unknown keys are ignored
        return header

    def message(self) -> list[bytes]:
        r = self.rng.random()
        pixels = self.frame.tobytes()
        if r < 0.4:
            kind, parts = "valid", [b"frame", msgpack.packb(self.valid_header(self.frame.shape, "uint16")), pixels]
        elif r < 0.5:  # spec-valid, but not this model's frames
            h, w = (int(x) for x in self.rng.integers(1, 64, size=2))
            dtype = ["uint8", "uint16", "float32"][int(self.rng.integers(3))]
            data = np.zeros((h, w), dtype).tobytes()
            kind, parts = "other_shape", [b"frame", msgpack.packb(self.valid_header((h, w), dtype)), data]
        else:
            header = self.valid_header(self.frame.shape, "uint16")
            bad = int(self.rng.integers(9))
            if bad == 0:
                header[["seq", "t_acq_ns", "t_pub_ns"][int(self.rng.integers(3))]] = -int(self.rng.integers(1, 2**63))
            elif bad == 1:
                header["seq"] = [1.5, "7", True, None][int(self.rng.integers(4))]
            elif bad == 2:
                header["v"] = int(self.rng.integers(2, 1000))
            elif bad == 3:
                header["shape"] = [16384, 16384]
            elif bad == 4:
                header["dtype"] = "float64"
            elif bad == 5:
                del header[["v", "seq", "t_acq_ns", "t_pub_ns", "shape", "dtype"][int(self.rng.integers(6))]]
            packed = msgpack.packb(header)
            if bad == 6:
                parts = [b"frame", packed, pixels[: int(self.rng.integers(0, len(pixels)))]]
            elif bad == 7:
                parts = [b"frame", self.rng.bytes(int(self.rng.integers(0, 300))), self.rng.bytes(64)]
            elif bad == 8:
                parts = [b"frame", packed] if self.rng.random() < 0.5 else [b"frame", packed, pixels, b"x"]
            else:
                parts = [b"frame", packed, pixels]
            kind = "malformed"
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        return parts


def _config(path: Path, bundle: Path, frames: str, log: Path) -> None:
    path.write_text(
        f'[model]\nbundle = "{bundle}"\n'
        f'[sockets]\nframes = "{frames}"\nactions = "tcp://127.0.0.1:*"\ncontrol = "tcp://127.0.0.1:*"\n'
        '[backend]\nname = "onnxruntime"\nwarmup_frames = 2\n'
        "[policy]\nheartbeat_interval_s = 0.05\n"
        f'[decision_log]\npath = "{log}"\n'
        '[logging]\nformat = "json"\nsummary_interval_s = 1.0\n'
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [0, 1])
def test_fuzzing_the_daemon_process_leaves_it_up_and_decoding(seed: int, daemon_bundle: Path, tmp_path: Path,
                                                              kit: Any) -> None:
    context = zmq.Context()
    publisher = FramePublisher("tcp://127.0.0.1:*", context=context)
    config = tmp_path / "decoder.toml"
    _config(config, daemon_bundle, publisher.endpoint, tmp_path / "decisions.msgpack")
    proc = subprocess.Popen([sys.executable, "-m", "decoder", "--config", str(config)], cwd=REPO,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=dict(os.environ))
    lines: list[dict[str, Any]] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                lines.append({"event": raw.rstrip()})
            if lines[-1].get("event") == "ready":
                ready.set()
        ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    subscriber = control = None
    try:
        assert ready.wait(60) and proc.poll() is None, lines[-5:]
        endpoints = next(line for line in lines if line.get("event") == "ready")
        subscriber = ActionSubscriber(endpoints["actions"], context=context)
        control = ControlClient(endpoints["control"], context=context)
        subscriber.recv(timeout=10)
        assert publisher.wait_for_subscriber(10)
        rss_before = _rss_kib(proc.pid)
        fuzzer = _Fuzzer(seed, kit.frames_for(1)[0])
        started = time.monotonic()
        for i in range(MESSAGES):
            publisher.socket.send_multipart(fuzzer.message())
            if i % 32 == 31:
                time.sleep(0.004)  # stay under the SUB queue's high-water mark most of the time
        fuzz_s = time.monotonic() - started
        time.sleep(1.0)
        assert proc.poll() is None, f"the daemon exited with {proc.returncode}: {lines[-5:]}"
        rss_after = _rss_kib(proc.pid)
        counters = control.request("status", timeout=10).data["counters"]
        # The valid frames that follow are decoded (a fresh sequence: a restart for the daemon).
        actions: list[Action] = []
        for i, frame in enumerate(kit.frames_for(kit.WINDOW + 2, seed=seed)):
            publisher.publish(frame, seq=i)
            while True:
                message = subscriber.recv(timeout=10)
                if isinstance(message, Action) and message.seq == i:
                    actions.append(message)
                    break
        heartbeat = next(m for m in iter(lambda: subscriber.recv(timeout=10), None) if isinstance(m, Status))
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        assert proc.stderr is not None
        proc.stderr.close()
        for socket in (subscriber, control):
            if socket is not None:
                socket.close()
        publisher.close(0)
        context.term()

    seen = counters["frames_received"] + counters["malformed_messages"] + counters["wrong_shape_frames"]
    print(f"seed {seed}: sent {MESSAGES} in {fuzz_s:.1f} s {fuzzer.kinds}; daemon saw {seen} "
          f"(received {counters['frames_received']}, malformed {counters['malformed_messages']}, "
          f"wrong shape {counters['wrong_shape_frames']}, decoded {counters['frames_decoded']}, "
          f"restarts {counters['sequence_restarts']}, lost {counters['frames_lost']}); "
          f"RSS {rss_before} -> {rss_after} KiB")
    assert code == 0, lines[-5:]
    assert actions[-1].state == "decoding"
    assert counters["malformed_messages"] > 0 and counters["frames_received"] > 0
    assert seen <= MESSAGES
    assert all(0 <= value <= WIRE_INT_MAX for value in counters.values())
    assert all(0 <= value <= WIRE_INT_MAX for value in heartbeat.counters.values())
    assert rss_after - rss_before < 64 * 1024, "memory grew by more than 64 MiB under fuzzing"
