"""Shared helpers for the replay/echo/benchmark tests: a real echo over TCP loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from tools.bench.echo import EchoFloor
from tools.bench.frames import ReplayData


@dataclass
class RunningEcho:
    echo: EchoFloor
    frames_endpoint: str
    actions_endpoint: str


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Tests that run the CLI's main() configure structlog to print to the stderr pytest captured
    for them, which is closed afterwards; start and leave every test here with the defaults."""
    import structlog

    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context]:
    """A private context: a socket left open makes term() hang and the test time out (loudly)."""
    context = zmq.Context()
    yield context
    context.term()


@pytest.fixture
def echo_server(zmq_context: zmq.Context) -> Iterator[RunningEcho]:
    """An echo in a thread, both sockets bound on random loopback ports (the replay connects)."""
    echo = EchoFloor("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", frames_bind=True,
                     heartbeat_interval_s=0.05, context=zmq_context)
    stop = threading.Event()
    thread = threading.Thread(target=echo.serve, args=(stop,), daemon=True)
    thread.start()
    assert echo.ready.wait(5), "echo did not start"
    yield RunningEcho(echo, echo.frames_bound_endpoint, echo.actions_bound_endpoint)
    stop.set()
    thread.join(5)
    assert not thread.is_alive(), "echo thread did not stop"


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny exported bundle for tests that run the real daemon: an untrained 32 x 32 uint16
    encoder, window 4, 30 Hz, with a random head (it checks the plumbing, not decoding accuracy)."""
    import torch

    from trainer.data.schema import ACTION_NAMES
    from trainer.export import export_model
    from trainer.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("neural_conv", frame_shape=(32, 32), window=4, channels=(4, 8), features=8,
                        temporal_channels=8, embedding_dim=8).eval()
    weight = torch.randn(len(ACTION_NAMES), 8, generator=torch.Generator().manual_seed(0))
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    export_model(model, weight, torch.zeros(len(ACTION_NAMES)), ACTION_NAMES, out, 30.0, frame_dtype="uint16",
                 include_pt2=False, parity_tolerance=1e-2)
    return out


@pytest.fixture
def tiny_daemon_settings(tiny_bundle: Path, tmp_path: Path) -> Callable[..., Any]:
    """``tiny_daemon_settings(frames, sockets={...}, **sections)``: settings of a real daemon on the
    tiny bundle, frames from ``frames``, actions and control on random loopback ports, 50 ms
    heartbeats; ``sockets`` and other sections add to or override these."""

    def make(frames: str, sockets: dict[str, Any] | None = None, **sections: dict[str, Any]) -> Any:
        from decoder.settings import load_settings

        return load_settings(**{
            "model": {"bundle": tiny_bundle},
            "sockets": {"frames": frames, "actions": "tcp://127.0.0.1:*", "control": "tcp://127.0.0.1:*",
                        "linger_ms": 100, **(sockets or {})},
            "backend": {"name": "onnxruntime", "warmup_frames": 2},
            "policy": {"heartbeat_interval_s": 0.05},
            "decision_log": {"path": tmp_path / "decisions.msgpack"},
            "logging": {"summary_interval_s": 60.0},
            **sections,
        })

    return make


@pytest.fixture
def tiny_data() -> object:
    """A factory of small in-memory recordings (16 x 16 uint16 frames, 3 label classes)."""
    return make_tiny_data


def make_tiny_data(n: int = 40, shape: tuple[int, int] = (16, 16), rate_hz: float = 200.0,
              labels: bool = True) -> ReplayData:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 4000, size=(n, *shape), dtype=np.uint16)
    return ReplayData(
        frames=frames,
        times_s=10.0 + np.arange(n) / rate_hz,
        labels=(np.arange(n) % 3) if labels else None,
        class_names=("a", "b", "c") if labels else (),
        name="tiny",
    )


@pytest.fixture
def small_trial_file() -> object:
    """A factory writing a real (small) HDF5 trial with labels, through the recording writer."""
    return write_small_trial


def write_small_trial(path: Path, n: int = 40, shape: tuple[int, int] = (16, 16), rate_hz: float = 100.0,
                      animal_id: str = "animal00", trial_id: str = "trial00") -> Path:
    from trainer.data.recording import write_trial
    from trainer.data.schema import ACTION_NAMES

    rng = np.random.default_rng(1)
    pose_rate = 2 * rate_hz
    n_pose = 2 * n
    return write_trial(
        path,
        animal_id=animal_id,
        trial_id=trial_id,
        neural=rng.integers(0, 4000, size=(n, *shape), dtype=np.uint16),
        neural_times=np.arange(n) / rate_hz,
        pose=rng.normal(size=(n_pose, 3, 3)).astype(np.float32),
        pose_times=np.arange(n_pose) / pose_rate,
        joint_names=["a", "b", "c"],
        labels=(np.arange(n_pose) // 10) % len(ACTION_NAMES),
        class_names=ACTION_NAMES,
    )


@pytest.fixture
def scanimage_writer() -> object:
    """A factory writing TIFF pages laid out as ScanImage writes them (tifffile reads the file as
    ScanImage's): channels interleaved, SI settings in Software, frameTimestamps_sec in each
    description; ``period_s`` between frames, as an acquisition paces them."""
    return write_scanimage


def write_scanimage(path: Path, frames: np.ndarray, rate_hz: float, period_s: float = 0.0) -> None:
    import tifffile

    n, channels = frames.shape[:2]
    saved = "[" + ";".join(str(c + 1) for c in range(channels)) + "]" if channels > 1 else "1"
    software = f"SI.LINE_FORMAT_VERSION = 1\nSI.VERSION_MAJOR = '2021'\nSI.hChannels.channelSave = {saved}\n"
    with tifffile.TiffWriter(path) as tw:
        for i in range(n):
            for c in range(channels):
                description = (f"frameNumbers = {i + 1}\nacquisitionNumbers = 1\nframeNumberAcquisition = {i + 1}\n"
                               f"frameTimestamps_sec = {i / rate_hz:.6f}\nacqTriggerTimestamps_sec = \n"
                               "endOfAcquisition = 0\nepoch = [2026 12 2 16 0 0.5]\nauxTrigger0 = []\n")
                tw.write(frames[i, c], software=software, description=description, metadata=None)
            if period_s:
                time.sleep(period_s)
