"""Shared fixtures of the decoder tests: a tiny exported model, its bundle and raw frames for it.

The model is an untrained registered `neural_conv` encoder at 32 x 32 uint16 with a random
linear head, exported once per session with `trainer.export.export_model` (ONNX and `.pt2`).
`tiny_model.reference(...)` runs the same frames through the PyTorch model itself, the ground
truth of the parity tests.
"""

from __future__ import annotations

import contextlib
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
