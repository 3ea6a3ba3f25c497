"""ONNX Runtime on the CPU: the default backend where there is no NVIDIA GPU.

Set for latency rather than throughput: sequential execution, a fixed small thread count, and
no spinning threads (a spinning pool burns the cores the receive/publish loop needs and makes
tail latency depend on what else runs). Inputs and outputs are bound once to preallocated
NumPy buffers (I/O binding over OrtValues that share their memory), so a call copies the
frame into the input buffer, runs, and returns views of the output buffers: nothing is
allocated per frame on the Python side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from decoder.backends.base import BackendError, InputChecker, io_description, synthetic_frames
from protocols.bundle import FRAME_ENCODER, TEMPORAL, WHOLE_WINDOW, Bundle


class _BoundGraph:
    """One InferenceSession with its inputs and outputs bound to fixed NumPy buffers."""

    def __init__(self, path: str, options: ort.SessionOptions, graph: str, bundle: Bundle) -> None:
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for bad graphs
            raise BackendError(f"onnxruntime cannot load {path}: {exc}") from exc
        signature = bundle.manifest.graph_signature(graph)
        self.inputs = {n: np.zeros(s, dtype=np.dtype(d)) for n, d, s in signature["inputs"]}
        self.outputs = {n: np.zeros(s, dtype=np.dtype(d)) for n, d, s in signature["outputs"]}
        self.binding = self.session.io_binding()
        # keep the OrtValues alive as long as the binding: they wrap the arrays' memory
        self._values = []
        for name, array in self.inputs.items():
            value = ort.OrtValue.ortvalue_from_numpy(array, "cpu", 0)
            self.binding.bind_ortvalue_input(name, value)
            self._values.append(value)
        for name, array in self.outputs.items():
            value = ort.OrtValue.ortvalue_from_numpy(array, "cpu", 0)
            self.binding.bind_ortvalue_output(name, value)
            self._values.append(value)

    def run(self) -> None:
        # No RunOptions on purpose: with one, onnxruntime 1.32's Python wrapper looks up an
        # unset config key, which raises and catches a C++ exception on every call (measured
        # ~70 µs of CPU per run, more than the temporal graph itself).
        self.session.run_with_iobinding(self.binding)


class OnnxRuntimeBackend:
    """ONNX Runtime CPU execution provider; see the module docstring."""

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, threads: int = 1, optimization: str = "all") -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        if optimization not in levels:
            raise ValueError(f"optimization must be one of {', '.join(levels)}, got {optimization!r}")
        self.bundle = bundle
        self.threads = int(threads)
        self.optimization = optimization
        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = levels[optimization]
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3  # warnings from ORT itself would otherwise go to stderr unstructured
        self._check = InputChecker(bundle)
        self._graphs = {
            graph: _BoundGraph(str(bundle.file(f"{graph}.onnx")), options, graph, bundle)
            for graph in (FRAME_ENCODER, TEMPORAL, WHOLE_WINDOW)
        }
        enc, tmp, whole = (self._graphs[g] for g in (FRAME_ENCODER, TEMPORAL, WHOLE_WINDOW))
        # Direct references for the hot path (no dict lookups per frame).
        self._frame_in = enc.inputs["frame"][0]
        self._features_out = enc.outputs["features"][0]
        self._window_in = tmp.inputs["features"][0]
        self._t_embedding = tmp.outputs["embedding"][0]
        self._t_probabilities = tmp.outputs["probabilities"][0]
        self._frames_in = whole.inputs["frames"][0]
        self._w_embedding = whole.outputs["embedding"][0]
        self._w_probabilities = whole.outputs["probabilities"][0]
        self._run_encoder = enc.run
        self._run_temporal = tmp.run
        self._run_whole = whole.run
        self._closed = False

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": "cpu",
            "onnxruntime": ort.__version__,
            "providers": ["CPUExecutionProvider"],
            "threads": self.threads,
            "optimization": self.optimization,
            "execution_mode": "sequential",
            "spinning": False,
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
        np.copyto(self._frame_in, frame)
        self._run_encoder()
        return self._features_out

    def decode_window(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check.features(features)
        np.copyto(self._window_in, features)
        self._run_temporal()
        return self._t_embedding, self._t_probabilities

    def infer_whole_window(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check.frames(frames)
        np.copyto(self._frames_in, frames)
        self._run_whole()
        return self._w_embedding, self._w_probabilities

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._graphs.clear()
