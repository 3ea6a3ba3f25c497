"""PyTorch, the reference backend: runs the bundle's torch.export (`.pt2`) graphs on CPU or CUDA.

The archives are loaded as data only (`decoder.backends.safe_pt2`): an archive that would make
`torch.export.load` unpickle, compile or import anything is refused before torch reads it.

It exists to check the other backends against the model as trained, and as a last resort when
ONNX Runtime is missing. It is not allocation-free (PyTorch allocates its outputs); inputs are
copied into preallocated tensors and outputs into preallocated NumPy buffers so that callers
see the same ownership rules as with every other backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from decoder.backends.base import BackendUnavailable, InputChecker, io_description, synthetic_frames
from decoder.backends.safe_pt2 import load_program
from protocols.bundle import FRAME_ENCODER, TEMPORAL, WHOLE_WINDOW, Bundle

_TORCH_DTYPES = {"uint8": torch.uint8, "uint16": torch.uint16, "float32": torch.float32}


class TorchBackend:
    """torch.export programs of the bundle; `device` "cpu" or "cuda" (or "cuda:N")."""

    name = "torch"

    def __init__(self, bundle: Bundle, device: str = "cpu", threads: int | None = None) -> None:
        missing = [f"{g}.pt2" for g in (FRAME_ENCODER, TEMPORAL, WHOLE_WINDOW) if not bundle.has_file(f"{g}.pt2")]
        if missing:
            raise BackendUnavailable(
                f"bundle {bundle.path} has no {', '.join(missing)}; re-export it with the .pt2 files for the torch backend"
            )
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable(f"device {device!r} requested but torch sees no CUDA device")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(int(threads))  # process-wide in PyTorch; the reference backend owns the process
        self.bundle = bundle
        self.device = torch.device(device)
        self.threads = threads
        self._check = InputChecker(bundle)
        self._modules = {}
        for graph in (FRAME_ENCODER, TEMPORAL, WHOLE_WINDOW):
            name = f"{graph}.pt2"
            program = load_program(bundle.file(name), bundle.manifest.files[name])
            self._modules[graph] = program.module().to(self.device)
        h, w = bundle.frame_shape
        raw = _TORCH_DTYPES[bundle.frame_dtype]
        self._frame_in = torch.zeros((1, h, w), dtype=raw, device=self.device)
        self._window_in = torch.zeros((1, bundle.window, bundle.feature_dim), dtype=torch.float32, device=self.device)
        self._frames_in = torch.zeros((1, bundle.window, h, w), dtype=raw, device=self.device)
        self._features_out = np.zeros(bundle.feature_dim, np.float32)
        self._t_out = (np.zeros(bundle.embedding_dim, np.float32), np.zeros(bundle.num_classes, np.float32))
        self._w_out = (np.zeros(bundle.embedding_dim, np.float32), np.zeros(bundle.num_classes, np.float32))

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": str(self.device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "model_id": self.bundle.model_id,
            "io": io_description(self.bundle),
        }

    def warm_up(self, n: int = 20) -> None:
        frames = synthetic_frames(self.bundle, self.bundle.window, seed=1)
        for _ in range(n):
            for frame in frames:
                self.encode_frame(frame)
            self.decode_window(np.zeros((self.bundle.window, self.bundle.feature_dim), np.float32))
            self.infer_whole_window(frames)

    def encode_frame(self, frame: np.ndarray) -> np.ndarray:
        self._check.frame(frame)
        with torch.inference_mode():
            self._frame_in[0].copy_(torch.from_numpy(frame))
            out = self._modules[FRAME_ENCODER](self._frame_in)
            np.copyto(self._features_out, out[0].cpu().numpy())
        return self._features_out

    def decode_window(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check.features(features)
        with torch.inference_mode():
            self._window_in[0].copy_(torch.from_numpy(features))
            embedding, probabilities = self._modules[TEMPORAL](self._window_in)
            return self._copy_out(embedding, probabilities, self._t_out)

    def infer_whole_window(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check.frames(frames)
        with torch.inference_mode():
            self._frames_in[0].copy_(torch.from_numpy(frames))
            embedding, probabilities = self._modules[WHOLE_WINDOW](self._frames_in)
            return self._copy_out(embedding, probabilities, self._w_out)

    @staticmethod
    def _copy_out(
        embedding: torch.Tensor, probabilities: torch.Tensor, out: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        np.copyto(out[0], embedding[0].cpu().numpy())
        np.copyto(out[1], probabilities[0].cpu().numpy())
        return out

    def close(self) -> None:
        self._modules.clear()
