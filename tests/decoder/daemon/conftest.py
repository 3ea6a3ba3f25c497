"""Fixtures for the daemon's tests: real tiny bundles, the real service in-process, real sockets.

Bundles are exported once per session with ``trainer.export.export_model`` from an untrained
registered model at 32 x 32 (a few seconds each). The service runs on the test's event loop
with every endpoint on a random loopback port; clients use their own ZeroMQ contexts that
fail the test if a socket is left open, and the harness fails it if the service leaves a task
or its inference thread behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
import zmq.asyncio

from decoder.service import DecoderService
from decoder.settings import DecoderSettings, load_settings
from protocols.bundle import compute_model_id, load_bundle, sha256_file, write_manifest
from protocols.client import AsyncActionSubscriber, AsyncControlClient, FramePublisher
from protocols.codec import PublishedMessage
from protocols.messages import Action, Event, Status
from trainer.adaptation import OnlineCentring

FRAME_SHAPE = (32, 32)
WINDOW = 4
FRAME_RATE_HZ = 30.0
ONLINE_CENTRING = OnlineCentring(prior_frames=3, time_constant_frames=8)  # short: both phases within a test
SERVICE_TASKS = {"hot-path", "heartbeat", "health", "summary", "control", "supervise", "control-reload",
                 "handshake-monitor", "metrics", "outputs"}


def _export(out: Path, seed: int, frame_dtype: str, online_centring: bool = False) -> Path:
    import torch

    from trainer.data.schema import ACTION_NAMES
    from trainer.export import export_model
    from trainer.models import build_model

    torch.manual_seed(seed)
    model = build_model(
        "neural_conv", frame_shape=FRAME_SHAPE, window=WINDOW, channels=(4, 8), features=8,
        temporal_channels=8, embedding_dim=8,
    )
    # An untrained encoder barely moves its embedding between frames; a random head fitted to
    # the whitened embeddings of test frames makes confident, frame-dependent decisions, so the
    # debouncer and the action sequence have something to do.
    model.eval()
    frames = torch.from_numpy(frames_for(40, seed=99, dtype=frame_dtype).astype(np.float32))
    with torch.no_grad():
        embeddings = model(torch.stack([frames[i : i + WINDOW] for i in range(len(frames) - WINDOW)]))
    mean, std = embeddings.mean(0), embeddings.std(0) + 1e-6
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(len(ACTION_NAMES), 8, generator=generator) * 2.0 / std
    bias = -(weight @ mean)
    # Weights ~1000 turn float rounding of the embedding (~1e-6) into ~1e-3 in probabilities, so
    # the export's ONNX-vs-PyTorch check gets a looser bound here; the daemon tests compare the
    # daemon with the same ONNX backend offline, bit for bit.
    adaptation = ONLINE_CENTRING.bundle_record(weight, bias) if online_centring else None
    export_model(
        model, weight, bias, ACTION_NAMES, out, FRAME_RATE_HZ, frame_dtype=frame_dtype, include_pt2=False,
        parity_tolerance=1e-2, adaptation=adaptation,
    )
    return out


@pytest.fixture(scope="session")
def daemon_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("bundles") / "daemon_uint16", seed=0, frame_dtype="uint16")


@pytest.fixture(scope="session")
def centred_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The daemon bundle's graphs plus adaptation.json (online centring, short constants)."""
    return _export(tmp_path_factory.mktemp("bundles") / "centred", seed=0, frame_dtype="uint16", online_centring=True)


@pytest.fixture(scope="session")
def float_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("bundles") / "tiny_float32", seed=1, frame_dtype="float32")


@pytest.fixture(scope="session")
def variant_bundle(daemon_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same graphs, one more file: a valid bundle with a different model id (a 'new' model)."""
    out = tmp_path_factory.mktemp("bundles") / "variant"
    shutil.copytree(daemon_bundle, out)
    (out / "NOTES.txt").write_text("retrained on Tuesday's session\n")
    manifest = load_bundle(daemon_bundle).manifest
    files = dict(manifest.files, **{"NOTES.txt": sha256_file(out / "NOTES.txt")})
    write_manifest(out, manifest.model_copy(update={"files": files, "model_id": compute_model_id(files)}))
    load_bundle(out)
    return out


@pytest.fixture(scope="session")
def corrupt_bundle(daemon_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose temporal graph changed after export (checksum mismatch)."""
    out = tmp_path_factory.mktemp("bundles") / "corrupt"
    shutil.copytree(daemon_bundle, out)
    data = bytearray((out / "temporal.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "temporal.onnx").write_bytes(bytes(data))
    return out


def frames_for(count: int, seed: int = 0, dtype: str = "uint16", segment: int = 12) -> np.ndarray:
    """Frames in segments of ``segment`` similar frames (a fixed pattern plus noise), like bouts
    of one behaviour: the model holds its decision within a segment and changes it between."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0, 4000, size=(count // segment + 1, *FRAME_SHAPE))
    noise = rng.normal(0, 150, size=(count, *FRAME_SHAPE))
    frames = np.clip(patterns[np.arange(count) // segment] + noise, 0, 65535)
    return frames.astype(np.float32 if dtype == "float32" else np.uint16)


def make_settings(bundle: Path, tmp_path: Path, frames: str, **sections: dict[str, Any]) -> DecoderSettings:
    """Test settings: random loopback ports, a fast heartbeat, a decision log under tmp_path."""
    defaults: dict[str, dict[str, Any]] = {
        "model": {"bundle": bundle},
        "sockets": {"frames": frames, "actions": "tcp://127.0.0.1:*", "control": "tcp://127.0.0.1:*", "linger_ms": 100},
        "backend": {"name": "onnxruntime", "warmup_frames": 2},
        "policy": {"heartbeat_interval_s": 0.05, "min_duration_s": 0.1},
        "decision_log": {"path": tmp_path / "decisions.msgpack"},
        "logging": {"summary_interval_s": 60.0},
    }
    for name, values in sections.items():
        defaults[name] = {**defaults.get(name, {}), **values}
    return load_settings(**defaults)


@pytest.fixture
def zctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    leaked = [s for s in list(getattr(context, "_sockets", ())) if not s.closed]
    context.destroy(linger=0)
    assert not leaked, f"{len(leaked)} ZeroMQ socket(s) left open"


@pytest.fixture
def actx() -> Iterator[zmq.asyncio.Context]:
    context = zmq.asyncio.Context()
    yield context
    leaked = [s for s in list(getattr(context, "_sockets", ())) if not s.closed]
    context.destroy(linger=0)
    assert not leaked, f"{len(leaked)} ZeroMQ socket(s) left open"


class Harness:
    """A running service plus the clients a rig would use, all on loopback."""

    def __init__(self, service: DecoderService, task: asyncio.Task[None], publisher: FramePublisher,
                 subscriber: AsyncActionSubscriber, control: AsyncControlClient) -> None:
        self.service = service
        self.task = task
        self.publisher = publisher
        self.subscriber = subscriber
        self.control = control
        self.received: list[PublishedMessage] = []

    async def next_message(self, timeout: float = 5.0) -> PublishedMessage:
        message = await self.subscriber.recv(timeout=timeout)
        self.received.append(message)
        return message

    async def next_action(self, timeout: float = 5.0) -> Action:
        while True:
            message = await self.next_message(timeout)
            if isinstance(message, Action):
                return message

    async def wait_connected(self) -> None:
        """Until our subscriber hears a heartbeat and the daemon subscribes to our frames."""
        while not isinstance(await self.next_message(), Status):
            pass
        assert await asyncio.to_thread(self.publisher.wait_for_subscriber, 5.0), "daemon never subscribed"

    async def lockstep(self, frames: np.ndarray, first_seq: int = 0) -> list[Action]:
        """Publish each frame only after the action of the previous one came back: no skips."""
        actions = []
        for i, frame in enumerate(frames):
            self.publisher.publish(frame, seq=first_seq + i)
            actions.append(await self.next_action())
        return actions

    async def drain(self, quiet_s: float = 0.3) -> list[PublishedMessage]:
        """Everything until nothing but heartbeats arrives for ``quiet_s``."""
        got: list[PublishedMessage] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + quiet_s
        while (remaining := deadline - loop.time()) > 0:
            try:
                message = await self.subscriber.recv(timeout=remaining)
            except TimeoutError:
                break
            self.received.append(message)
            got.append(message)
            if not isinstance(message, Status):
                deadline = loop.time() + quiet_s
        return got

    def actions(self) -> list[Action]:
        return [m for m in self.received if isinstance(m, Action)]

    def events(self) -> list[Event]:
        return [m for m in self.received if isinstance(m, Event)]

    async def output_report(self, name: str) -> dict[str, Any]:
        """The status reply's part for one TTL output, with the daemon's counters."""
        reply = await self.control.request("status")
        return reply.data["outputs"][name] | {"counters": reply.data["counters"]}


@pytest.fixture
async def start_service(
    tmp_path: Path, zctx: zmq.Context, actx: zmq.asyncio.Context
) -> AsyncIterator[Callable[..., Any]]:
    """``await start_service(bundle, **sections) -> Harness``; everything is stopped and checked after."""
    harnesses: list[Harness] = []

    async def start(bundle: Path, *, model_loader: Any = None, wait: bool = True, **sections: Any) -> Harness:
        publisher = FramePublisher("tcp://127.0.0.1:*", context=zctx)
        settings = make_settings(bundle, tmp_path, publisher.endpoint, **sections)
        service = DecoderService(settings) if model_loader is None else DecoderService(settings, model_loader=model_loader)
        task = asyncio.create_task(service.serve(install_signal_handlers=False))
        ready = asyncio.create_task(service.ready.wait())
        await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            publisher.close(0)
            task.result()  # raises the startup error
        assert service.ready.is_set(), "service did not become ready"
        subscriber = AsyncActionSubscriber(service.endpoints["actions"], context=actx)
        control = AsyncControlClient(service.endpoints["control"], context=actx)
        harness = Harness(service, task, publisher, subscriber, control)
        harnesses.append(harness)
        if wait:
            await harness.wait_connected()
        return harness

    yield start

    for harness in harnesses:
        harness.service.request_shutdown()
        try:
            if harness.task.done():
                harness.task.exception()  # the test looked at how it ended
            else:
                await asyncio.wait_for(harness.task, timeout=15)
        finally:
            harness.subscriber.close(0)
            harness.control.close()
            harness.publisher.close(0)
    leftover = [t.get_name() for t in asyncio.all_tasks() if t.get_name() in SERVICE_TASKS and not t.done()]
    assert not leftover, f"service tasks left running: {leftover}"
    alive = [t.name for t in threading.enumerate() if t.name == "hot-path"]
    assert not alive, "hot-path thread left running"


REPO = Path(__file__).resolve().parents[3]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string is a JSON string


class DaemonProcess:
    """``python -m decoder`` as its own process, its JSON log lines read on a thread."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "decoder", "--config", str(config)], cwd=REPO, stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL, text=True, env=dict(os.environ),
        )
        self.lines: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                self.lines.append(json.loads(raw))
            except json.JSONDecodeError:
                self.lines.append({"event": raw.rstrip()})
            if self.lines[-1].get("event") == "ready":
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 60.0) -> dict[str, str]:
        """The endpoints from the daemon's "ready" line."""
        assert self._ready.wait(timeout) and self.proc.poll() is None, self.lines[-5:]
        ready = next(line for line in self.lines if line.get("event") == "ready")
        return {k: ready[k] for k in ("frames", "actions", "control")}

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == event]

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit code (killed if it does not stop in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return self.proc.returncode


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """``daemon_process(bundle, frames_endpoint, **sections) -> DaemonProcess`` (not yet ready:
    call ``wait_ready()``); the daemon's own process, stopped with SIGTERM after the test."""
    started: list[DaemonProcess] = []

    def start(bundle: Path, frames: str, **sections: dict[str, Any]) -> DaemonProcess:
        config: dict[str, dict[str, Any]] = {
            "model": {"bundle": bundle},
            "sockets": {"frames": frames, "actions": "tcp://127.0.0.1:*", "control": "tcp://127.0.0.1:*"},
            "backend": {"name": "onnxruntime", "warmup_frames": 2},
            "policy": {"heartbeat_interval_s": 0.05},
            "decision_log": {"path": tmp_path / f"decisions-{len(started)}.msgpack"},
            "logging": {"format": "json", "summary_interval_s": 1.0},
        }
        for name, values in sections.items():
            config[name] = {**config.get(name, {}), **values}
        path = tmp_path / f"decoder-{len(started)}.toml"
        path.write_text("".join(
            f"[{name}]\n" + "".join(f"{key} = {_toml_value(value)}\n" for key, value in values.items())
            for name, values in config.items()
        ))
        daemon = DaemonProcess(path)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


class Kit:
    """Helpers for test modules (importlib import mode: tests cannot import conftest)."""

    WINDOW = WINDOW
    FRAME_SHAPE = FRAME_SHAPE
    FRAME_RATE_HZ = FRAME_RATE_HZ
    frames_for = staticmethod(frames_for)
    make_settings = staticmethod(make_settings)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
