"""TensorRT on an NVIDIA GPU: the design's target backend.

* Engines are built on the target machine from the bundle's ONNX graphs (fp32 by default with
  TF32 off, so results match the other backends; fp16 optional), with a TensorRT timing cache,
  and cached on disk (engine_cache.py) keyed by GPU model/compute capability, TensorRT version,
  ONNX hash and precision. A key change means a rebuild; with `build=False` (the daemon must
  not spend a minute building at start-up) a missing or mismatched engine is refused with a
  message naming the difference and the command that builds it.
* TensorRT has no uint16 tensors, so the graphs' leading `raw_to_float` Cast is taken off and the
  host widens the raw frame to float32 into a pinned buffer (exact for uint8/uint16 counts); all
  the scaling and pooling stay inside the engine.
* Static shapes, device and pinned host buffers allocated once, one dedicated CUDA stream, and
  the per-call sequence (host -> device copy, enqueue, device -> host copy) captured once in a
  CUDA graph, so a call is one graph launch plus a stream synchronise.

CUDA memory, streams and graphs come from PyTorch's CUDA runtime (torch is already a
dependency of the project); TensorRT only sees raw device pointers.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from decoder.backends.base import (
    BackendError,
    BackendUnavailable,
    InputChecker,
    io_description,
    synthetic_frames,
)
from decoder.backends.engine_cache import EngineCache, EngineKey, EngineMismatch
from protocols.bundle import FRAME_ENCODER, RAW_CAST_NODE, TEMPORAL, WHOLE_WINDOW, Bundle

log = structlog.get_logger(__name__)

GRAPHS = (FRAME_ENCODER, TEMPORAL, WHOLE_WINDOW)


def float_input_onnx(path: Path) -> bytes:
    """The ONNX bytes of `path` with the leading raw-dtype Cast removed (input becomes float32).

    Graphs without that node (float32 bundles, the temporal graph) come back unchanged.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    casts = [n for n in graph.node if n.name == RAW_CAST_NODE]
    if not casts:
        return model.SerializeToString()
    (cast,) = casts
    raw_name, float_name = cast.input[0], cast.output[0]
    graph.node.remove(cast)
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == float_name:
                node.input[k] = raw_name
    for out in graph.output:
        if out.name == float_name:
            raise BackendError(f"{path.name}: the raw cast output is a graph output; cannot rewrite")
    (inp,) = [i for i in graph.input if i.name == raw_name]
    inp.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    onnx.checker.check_model(model)
    return model.SerializeToString()


class _Engine:
    """One deserialized engine with its execution context, buffers and (optionally) CUDA graph."""

    def __init__(self, trt: Any, torch: Any, runtime: Any, data: bytes, device: Any, stream: Any, cuda_graph: bool) -> None:
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise EngineMismatch("TensorRT could not deserialize the engine (built by another version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.torch = torch
        self.stream = stream
        self.host_in: dict[str, Any] = {}
        self.host_out: dict[str, Any] = {}
        self.device_io: dict[str, Any] = {}
        torch_dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(f"engine tensor {name} has a dynamic shape {shape}; bundles are static")
            dtype = torch_dtypes.get(self.engine.get_tensor_dtype(name))
            if dtype is None:
                raise BackendError(f"engine tensor {name} has unsupported dtype {self.engine.get_tensor_dtype(name)}")
            device_tensor = torch.zeros(shape, dtype=dtype, device=device)
            host_tensor = torch.zeros(shape, dtype=dtype).pin_memory()
            self.device_io[name] = device_tensor
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.host_in[name] = host_tensor
            else:
                self.host_out[name] = host_tensor
            if not self.context.set_tensor_address(name, device_tensor.data_ptr()):
                raise BackendError(f"TensorRT refused the address of tensor {name}")
        # NumPy views of the pinned buffers: what callers fill and get back
        self.in_np = {n: t.numpy() for n, t in self.host_in.items()}
        self.out_np = {n: t.numpy() for n, t in self.host_out.items()}
        self.graph = None
        self._eager()  # first run outside capture: TensorRT does deferred allocations here
        stream.synchronize()
        if cuda_graph:
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=stream):
                    self._enqueue_all()
                stream.synchronize()
                self.graph = graph
            except Exception as exc:  # capture is an optimisation; run eagerly when it fails
                log.warning("CUDA graph capture failed; running eagerly", error=str(exc))
                self.graph = None

    def _enqueue_all(self) -> None:
        for name, host in self.host_in.items():
            self.device_io[name].copy_(host, non_blocking=True)
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise BackendError("TensorRT execute_async_v3 failed")
        for name, host in self.host_out.items():
            host.copy_(self.device_io[name], non_blocking=True)

    def _eager(self) -> None:
        with self.torch.cuda.stream(self.stream):
            self._enqueue_all()

    def close(self) -> None:
        # graph first (it references the buffers), then the context, then the engine
        self.graph = None
        self.context = None
        self.engine = None

    def run(self) -> None:
        if self.graph is not None:
            with self.torch.cuda.stream(self.stream):
                self.graph.replay()
        else:
            self._eager()
        self.stream.synchronize()


class TensorRTBackend:
    """See the module docstring. Options: `fp16`, `cache_dir`, `build`, `rebuild`, `cuda_graph`,
    `device` (GPU index), `workspace_mb`; `threads` is accepted and unused (GPU work)."""

    name = "tensorrt"

    def __init__(
        self,
        bundle: Bundle,
        fp16: bool = False,
        cache_dir: Path | str | None = None,
        build: bool = True,
        rebuild: bool = False,
        cuda_graph: bool = True,
        device: int = 0,
        workspace_mb: int = 1024,
        threads: int | None = None,
    ) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendUnavailable(f"tensorrt cannot be imported: {exc}") from exc
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailable("the TensorRT backend needs a CUDA build of torch and a visible GPU")
        self.bundle = bundle
        self.fp16 = bool(fp16)
        self.cuda_graph = bool(cuda_graph)
        self._trt = trt
        self._torch = torch
        self._device = torch.device("cuda", device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._cache = EngineCache(cache_dir)
        self._check = InputChecker(bundle)
        props = torch.cuda.get_device_properties(self._device)
        self.gpu_name = props.name
        self.compute_capability = f"{props.major}.{props.minor}"
        self.precision = "fp16" if self.fp16 else "fp32"
        self.engine_info: dict[str, dict[str, Any]] = {}
        with torch.cuda.device(self._device):
            self._stream = torch.cuda.Stream(self._device)
            self._engines: dict[str, _Engine] = {}
            try:
                self._load_engines(build=build, rebuild=rebuild, workspace_mb=workspace_mb)
            except BaseException:
                for engine in self._engines.values():
                    engine.close()
                raise
        enc, tmp, whole = (self._engines[g] for g in GRAPHS)
        self._enc, self._tmp, self._whole = enc, tmp, whole
        self._frame_in = enc.in_np["frame"][0]
        self._features_out = enc.out_np["features"][0]
        self._window_in = tmp.in_np["features"][0]
        self._t_out = (tmp.out_np["embedding"][0], tmp.out_np["probabilities"][0])
        self._frames_in = whole.in_np["frames"][0]
        self._w_out = (whole.out_np["embedding"][0], whole.out_np["probabilities"][0])
        self._closed = False

    def _load_engines(self, *, build: bool, rebuild: bool, workspace_mb: int) -> None:
        bundle = self.bundle
        for graph in GRAPHS:
            onnx_bytes = float_input_onnx(bundle.file(f"{graph}.onnx"))
            key = self.engine_key(graph, onnx_bytes)
            data, source = self._engine_bytes(key, onnx_bytes, build=build, rebuild=rebuild, workspace_mb=workspace_mb)
            path = self._cache.engine_path(bundle.model_id, key)
            try:
                engine = _Engine(self._trt, self._torch, self._runtime, data, self._device, self._stream, self.cuda_graph)
            except EngineMismatch as exc:
                raise EngineMismatch(f"{path}: {exc}") from None
            self._engines[graph] = engine
            self.engine_info[graph] = {"path": str(path), "source": source, "cuda_graph": engine.graph is not None}

    def engine_key(self, graph: str, onnx_bytes: bytes) -> EngineKey:
        return EngineKey(
            graph=graph,
            onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
            gpu_name=self.gpu_name,
            compute_capability=self.compute_capability,
            tensorrt_version=self._trt.__version__,
            precision=self.precision,
        )

    def _engine_bytes(self, key: EngineKey, onnx_bytes: bytes, *, build: bool, rebuild: bool, workspace_mb: int) -> tuple[bytes, str]:
        model_id = self.bundle.model_id
        if not rebuild:
            try:
                cached = self._cache.load(model_id, key)
            except EngineMismatch as exc:
                if not build:
                    raise
                log.warning("cached engine refused; rebuilding", graph=key.graph, reason=str(exc))
                cached = None
            if cached is not None:
                return cached, "cache"
            if not build:
                raise EngineMismatch(
                    f"{self._cache.explain_missing(model_id, key)}; build it on this machine with "
                    f"`actionloop engine build {self.bundle.path}{' --fp16' if self.fp16 else ''}`"
                )
        data = self._build(key, onnx_bytes, workspace_mb)
        self._cache.store(model_id, key, data, built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return data, "built"

    def _build(self, key: EngineKey, onnx_bytes: bytes, workspace_mb: int) -> bytes:
        trt = self._trt
        started = time.perf_counter()
        log.info("building TensorRT engine", graph=key.graph, precision=key.precision, gpu=key.gpu_name)
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"TensorRT cannot parse {key.graph}.onnx: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        if hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # fp32 must mean fp32: parity with the other backends
        if self.fp16:
            if not hasattr(trt.BuilderFlag, "FP16"):
                raise BackendError(f"TensorRT {trt.__version__} has no FP16 builder flag; build fp32 (fp16=False)")
            if not getattr(builder, "platform_has_fast_fp16", True):
                log.warning("GPU has no fast fp16; building fp16 anyway", gpu=key.gpu_name)
            config.set_flag(trt.BuilderFlag.FP16)
        timing_path = self._cache.timing_cache_path(key)
        timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.exists() else b"")
        config.set_timing_cache(timing, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f"TensorRT failed to build the {key.graph} engine (see TensorRT's log above)")
        timing_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = timing_path.with_name(f".{timing_path.name}.tmp")
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        tmp.replace(timing_path)
        log.info("TensorRT engine built", graph=key.graph, seconds=round(time.perf_counter() - started, 1))
        return bytes(serialized)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": f"cuda:{self._device.index}",
            "gpu": self.gpu_name,
            "compute_capability": self.compute_capability,
            "tensorrt": self._trt.__version__,
            "precision": self.precision,
            "cuda_graph": all(info["cuda_graph"] for info in self.engine_info.values()),
            "engines": self.engine_info,
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
        np.copyto(self._frame_in, frame)  # raw counts widened to float32 (exact)
        self._enc.run()
        return self._features_out

    def decode_window(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check.features(features)
        np.copyto(self._window_in, features)
        self._tmp.run()
        return self._t_out

    def infer_whole_window(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check.frames(frames)
        np.copyto(self._frames_in, frames)
        self._whole.run()
        return self._w_out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._stream.synchronize()
            for engine in self._engines.values():
                engine.close()
            self._engines.clear()
