"""Shared fixtures of the decoder tests: a tiny exported model, its bundle and raw frames for it;
stand-ins for the NI-DAQmx and LabJack LJM modules (at the end).

The model is an untrained registered `neural_conv` encoder at 32 x 32 uint16 with a random
linear head, exported once per session with `trainer.export.export_model` (ONNX and `.pt2`).
`tiny_model.reference(...)` runs the same frames through the PyTorch model itself, the ground
truth of the parity tests.
"""

from __future__ import annotations

import contextlib
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from protocols.bundle import Bundle, load_bundle

TINY_FRAME_SHAPE = (32, 32)
TINY_WINDOW = 4
TINY_FEATURES = 8
TINY_EMBEDDING = 8


@dataclass
class TinyModel:
    """The PyTorch model behind the tiny bundle, and the bundle's directory."""

    model: Any  # trainer NeuralEncoder, eval mode
    head_weight: Any  # torch.Tensor C x D
    head_bias: Any  # torch.Tensor C
    bundle_path: Path

    def reference_features(self, frame: np.ndarray) -> np.ndarray:
        """One raw frame (H, W) -> features (F,) through the PyTorch frame encoder."""
        import torch

        with torch.no_grad():
            raw = torch.from_numpy(frame.astype(np.float32))[None]
            return self.model.frame_encoder(raw)[0].numpy()

    def reference(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw frames (W, H, W) -> (embedding (D,), probabilities (C,)) through PyTorch."""
        import torch

        with torch.no_grad():
            raw = torch.from_numpy(frames.astype(np.float32))[None]
            embedding = self.model(raw)
            probabilities = torch.softmax(embedding @ self.head_weight.T + self.head_bias, dim=-1)
            return embedding[0].numpy(), probabilities[0].numpy()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    import torch

    from trainer.data.schema import ACTION_NAMES
    from trainer.export import export_model
    from trainer.models import build_model

    torch.manual_seed(0)
    model = build_model(
        "neural_conv",
        frame_shape=TINY_FRAME_SHAPE,
        window=TINY_WINDOW,
        channels=(4, 8),
        features=TINY_FEATURES,
        temporal_channels=8,
        embedding_dim=TINY_EMBEDDING,
    ).eval()
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(len(ACTION_NAMES), TINY_EMBEDDING, generator=generator)
    bias = torch.randn(len(ACTION_NAMES), generator=generator) * 0.1
    path = tmp_path_factory.mktemp("tiny") / "bundle"
    export_model(model, weight, bias, ACTION_NAMES, path, frame_rate_hz=30.0)
    return TinyModel(model=model, head_weight=weight, head_bias=bias, bundle_path=path)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_model: TinyModel) -> Bundle:
    return load_bundle(tiny_model.bundle_path)


@pytest.fixture(scope="session")
def raw_frames() -> np.ndarray:
    """24 raw uint16 frames (12-bit counts, like a PMT)."""
    rng = np.random.default_rng(7)
    return rng.integers(0, 4096, size=(24, *TINY_FRAME_SHAPE), dtype=np.uint16)


@contextlib.contextmanager
def restored_logging() -> Iterator[None]:
    """`tools.cli.main` configures structlog/logging onto the sys.stderr of the moment, which
    under pytest is one test's capture file; put the previous configuration back afterwards so
    later tests do not log into a closed file."""
    import logging

    import structlog

    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        structlog.configure(**saved)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def cli() -> Callable[[list[str]], int]:
    """Run `actionloop ARGS...` in-process (the real entry point) without leaking its logging set-up."""
    from tools.cli import main

    def run(argv: list[str]) -> int:
        with restored_logging():
            return main(argv)

    return run


class PtyPair:
    """A pseudo-terminal: the daemon opens ``path`` (the slave) with pyserial as it would a
    USB-serial device; the test reads what arrives on the master."""

    def __init__(self) -> None:
        import os

        self.master, self._slave = os.openpty()
        self.path = os.ttyname(self._slave)
        self.closed = False

    def read(self, quiet_s: float = 0.3, timeout_s: float = 10.0) -> bytes:
        """Every byte until none has come for ``quiet_s`` (at most ``timeout_s`` in all)."""
        import os
        import select
        import time

        got = bytearray()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], quiet_s)
            if not ready:
                break
            got += os.read(self.master, 4096)
        return bytes(got)

    def unplug(self) -> None:
        """Both ends closed: writes to a slave still open fail, as on a pulled USB cable."""
        import os

        if not self.closed:
            self.closed = True
            os.close(self.master)
            os.close(self._slave)


@pytest.fixture
def pty_pair() -> Iterator[Callable[[], PtyPair]]:
    """``pty_pair() -> PtyPair``; every pair made is closed after the test."""
    made: list[PtyPair] = []

    def make() -> PtyPair:
        made.append(PtyPair())
        return made[-1]

    yield make
    for pair in made:
        pair.unplug()


# ---- stand-ins for the NI-DAQmx and LabJack LJM Python modules ---------------------------
#
# Stand-ins for the vendor modules ``nidaqmx`` and ``labjack.ljm``, for tests only.
#
# No NI-DAQ device, NI-DAQmx driver, LabJack or LJM library exists on the machines these tests
# run on, and neither vendor has a simulated device that works without its driver (NI's simulated
# devices are made in NI MAX with NI-DAQmx installed; LJM's demo mode, identifier "-2", is in
# the LJM C library). These classes copy only the calls the drivers make, with the signatures of
# nidaqmx 1.x and labjack-ljm 1.23, and record what they are asked to do; they say nothing about
# how a real device behaves. ``monkeypatch.setattr(decoder.outputs.nidaq, "nidaqmx", ...)`` puts
# one in place of the real module for one test.


class Device:
    """What a test controls and sees: every write in order, opens and closes, and faults."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, ...]] = []  # each write: one value per line, in line order
        self.opened: list[Any] = []  # what each open was asked for (NI: channel names; LJM: openS args)
        self.closed = 0
        self.made = 0  # NI: tasks made (each must be closed again)
        self.tasks: list[Any] = []  # NI: the tasks, each with its own .closed
        self.names: list[str] = []  # LJM: the register names of the last write
        self.lacks: set[str] = set()  # LJM: register names the device does not have
        self.at_open = 0  # writes a driver makes while opening (set by the tests that use it)
        self.present = True  # False: opening fails, as with the device unplugged
        self.fail_writes = False  # True: writes fail, as with the cable pulled
        self.gate = threading.Event()  # cleared: a write waits here, as on a slow USB round trip
        self.gate.set()
        self.lock = threading.Lock()
        self.write_threads: set[str] = set()

    def record(self, values: Any) -> None:
        self.gate.wait(10)
        self.write_threads.add(threading.current_thread().name)
        with self.lock:
            self.writes.append(tuple(int(v) for v in values))

    def wait_writes(self, n: int, timeout: float = 5.0) -> list[tuple[int, ...]]:
        event = threading.Event()
        for _ in range(int(timeout / 0.005)):
            with self.lock:
                if len(self.writes) >= n:
                    return list(self.writes)
            event.wait(0.005)
        raise AssertionError(f"{n} writes expected, {len(self.writes)} made: {self.writes}")


def fake_nidaqmx(device: Device) -> types.SimpleNamespace:
    """nidaqmx's Task (do_channels.add_do_chan, start, out_stream, close), its errors, constants
    and stream_writers.DigitalMultiChannelWriter, as decoder/outputs/nidaq.py uses them."""

    class Error(Exception):
        pass

    class DaqNotFoundError(Error):
        pass

    class DaqError(Error):
        def __init__(self, message: str, error_code: int) -> None:
            super().__init__(message)
            self.error_code = error_code

    class Channels:
        def __init__(self, task: Task) -> None:
            self.task = task

        def add_do_chan(self, lines: str, name_to_assign_to_lines: str = "", line_grouping: Any = None) -> None:
            assert line_grouping == "CHAN_PER_LINE"
            if not device.present:
                raise DaqError(f"Device identifier is invalid.\nDevice Specified: {lines.split('/')[0]}", -200220)
            self.task.channels.append(lines)

    class Task:
        def __init__(self, new_task_name: str = "") -> None:
            device.made += 1
            device.tasks.append(self)
            self.closed = False
            self.channels: list[str] = []
            self.do_channels = Channels(self)
            self.started = False
            self.out_stream = types.SimpleNamespace(task=self)

        def start(self) -> None:
            self.started = True
            device.opened.append(list(self.channels))

        def close(self) -> None:
            assert not self.closed, "a task closed twice"
            self.closed = True
            device.closed += 1

    class DigitalMultiChannelWriter:
        def __init__(self, out_stream: Any, auto_start: Any = None) -> None:
            assert auto_start is False  # the task was started: no implicit start and stop per write
            self.task = out_stream.task
            self.verify_array_shape = True

        def write_one_sample_one_line(self, data: np.ndarray, timeout: float = 10) -> int:
            assert self.task.started and data.dtype == bool and data.shape == (len(self.task.channels),)
            if device.fail_writes:
                raise DaqError("Device cannot be accessed.\nTask Name: _unnamedTask<0>", -201003)  # DEV_CANNOT_BE_ACCESSED
            device.record(data)
            return 1

    return types.SimpleNamespace(
        Task=Task,
        errors=types.SimpleNamespace(Error=Error, DaqError=DaqError, DaqNotFoundError=DaqNotFoundError),
        constants=types.SimpleNamespace(LineGrouping=types.SimpleNamespace(CHAN_PER_LINE="CHAN_PER_LINE")),
        stream_writers=types.SimpleNamespace(DigitalMultiChannelWriter=DigitalMultiChannelWriter),
    )


def fake_ljm(device: Device) -> types.SimpleNamespace:
    """labjack.ljm's openS, eWriteNames, close and LJMError, as decoder/outputs/labjack.py uses them."""

    class LJMError(Exception):
        def __init__(self, errorCode: int, errorString: str) -> None:  # noqa: N803 (LJM's names)
            super().__init__(f"LJM library error code {errorCode} {errorString}")

    handles: set[int] = set()

    def openS(deviceType: str, connectionType: str, identifier: str) -> int:  # noqa: N802, N803
        if not device.present:
            raise LJMError(1227, "LJME_DEVICE_NOT_FOUND")
        device.opened.append((deviceType, connectionType, identifier))
        handles.add(len(device.opened))
        return len(device.opened)

    def eWriteNames(handle: int, numFrames: int, aNames: list[str], aValues: list[float]) -> None:  # noqa: N802, N803
        assert handle in handles and numFrames == len(aNames) == len(aValues)
        assert all(isinstance(v, float) for v in aValues)
        if device.fail_writes:
            raise LJMError(1239, "LJME_RECONNECT_FAILED")
        if device.lacks & set(aNames):
            raise LJMError(1294, "LJME_INVALID_NAME")  # a stand-in's error: what a real T4 says was not seen
        device.names = list(aNames)
        device.record(aValues)

    def close(handle: int) -> None:
        handles.discard(handle)
        device.closed += 1

    return types.SimpleNamespace(LJMError=LJMError, openS=openS, eWriteNames=eWriteNames, close=close)


@pytest.fixture
def daq_device() -> Device:
    return Device()


@pytest.fixture
def nidaqmx_standin(daq_device: Device, monkeypatch: pytest.MonkeyPatch) -> Device:
    """decoder.outputs.nidaq talks to the stand-in (no NI hardware or driver here)."""
    pytest.importorskip("nidaqmx", reason="the nidaq extra is not installed")
    import decoder.outputs.nidaq

    monkeypatch.setattr(decoder.outputs.nidaq, "nidaqmx", fake_nidaqmx(daq_device))
    return daq_device


@pytest.fixture
def ljm_standin(daq_device: Device, monkeypatch: pytest.MonkeyPatch) -> Device:
    """decoder.outputs.labjack talks to the stand-in (no LabJack or LJM library here)."""
    pytest.importorskip("labjack.ljm", reason="the labjack extra is not installed")
    import decoder.outputs.labjack

    monkeypatch.setattr(decoder.outputs.labjack, "ljm", fake_ljm(daq_device))
    return daq_device
