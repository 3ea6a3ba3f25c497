"""TensorRT backend: the parts that need no GPU (graph rewrite, engine cache and its refusals,
`engine` CLI) run everywhere; engine build/parity/cache reuse are marked `gpu` and skip cleanly
without tensorrt or an NVIDIA GPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from decoder.backends import BackendUnavailable, create_backend
from decoder.backends.engine_cache import EngineCache, EngineKey, EngineMismatch
from decoder.backends.tensorrt_backend import float_input_onnx
from decoder.streaming import StreamingDecoder
from protocols.bundle import RAW_CAST_NODE


def _key(**changes: str) -> EngineKey:
    fields = dict(
        graph="frame_encoder", onnx_sha256="a" * 64, gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability="9.0", tensorrt_version="10.13.0", precision="fp32",
    )
    fields.update(changes)
    return EngineKey(**fields)


# ---------------------------------------------------------------------------------------------
# No GPU needed


@pytest.mark.parametrize("graph, input_name", [("frame_encoder", "frame"), ("whole_window", "frames")])
def test_float_input_rewrite_computes_the_same_thing(tiny_bundle, raw_frames: np.ndarray, graph: str, input_name: str) -> None:
    """TensorRT gets the graph without its uint16 Cast; fed the same counts as float32 it must agree exactly."""
    rewritten = float_input_onnx(tiny_bundle.file(f"{graph}.onnx"))
    model = onnx.load_from_string(rewritten)
    assert RAW_CAST_NODE not in [n.name for n in model.graph.node]
    (inp,) = [i for i in model.graph.input if i.name == input_name]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    original = ort.InferenceSession(str(tiny_bundle.file(f"{graph}.onnx")), providers=["CPUExecutionProvider"])
    variant = ort.InferenceSession(rewritten, providers=["CPUExecutionProvider"])
    raw = raw_frames[None, 0] if graph == "frame_encoder" else raw_frames[None, : tiny_bundle.window]
    for a, b in zip(original.run(None, {input_name: raw}), variant.run(None, {input_name: raw.astype(np.float32)})):
        np.testing.assert_array_equal(a, b)


def test_temporal_graph_is_left_alone(tiny_bundle) -> None:
    rewritten = onnx.load_from_string(float_input_onnx(tiny_bundle.file("temporal.onnx")))
    assert rewritten.graph == onnx.load(str(tiny_bundle.file("temporal.onnx"))).graph


def test_engine_cache_round_trip(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    key = _key()
    assert cache.load("m" * 64, key) is None
    path = cache.store("m" * 64, key, b"engine-bytes", built_at="now")
    assert path.name.startswith("frame_encoder.fp32.") and path.suffix == ".engine"
    assert cache.load("m" * 64, key) == b"engine-bytes"
    assert [e["key"] for e in cache.entries("m" * 64)] == [key.as_dict()]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize(
    "change",
    [{"gpu_name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"}, {"tensorrt_version": "10.3.0"},
     {"onnx_sha256": "b" * 64}, {"precision": "fp16"}],
)
def test_a_changed_key_finds_no_engine_and_says_what_differs(tmp_path: Path, change: dict) -> None:
    cache = EngineCache(tmp_path)
    cache.store("m" * 64, _key(), b"engine-bytes")
    other = _key(**change)
    assert other.digest() != _key().digest()
    assert cache.load("m" * 64, other) is None  # a different key is a different file: rebuild
    message = cache.explain_missing("m" * 64, other)
    for field, value in change.items():
        assert f"{field}: engine has {getattr(_key(), field)!r}, this machine/bundle needs {value!r}" in message


def test_an_engine_whose_metadata_disagrees_is_refused(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    path = cache.store("m" * 64, _key(), b"engine-bytes")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["key"]["tensorrt_version"] = "8.6.1"  # e.g. a cache directory copied from another rig
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(EngineMismatch, match="tensorrt_version: engine has '8.6.1', this machine/bundle needs '10.13.0'"):
        cache.load("m" * 64, _key())


def test_a_damaged_or_unlabelled_engine_is_refused(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    path = cache.store("m" * 64, _key(), b"engine-bytes")
    path.write_bytes(b"engine-bytez")
    with pytest.raises(EngineMismatch, match="damaged"):
        cache.load("m" * 64, _key())
    path.with_suffix(".json").unlink()
    with pytest.raises(EngineMismatch, match="no readable metadata"):
        cache.load("m" * 64, _key())


def test_timing_cache_is_per_gpu_and_tensorrt(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    paths = {cache.timing_cache_path(k) for k in (_key(), _key(graph="temporal"), _key(tensorrt_version="10.3"), _key(compute_capability="8.9"))}
    assert len(paths) == 3  # graphs share one; a TensorRT or GPU change gets its own


def test_engine_info_lists_cached_engines_without_a_gpu(cli, tiny_bundle, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    EngineCache(tmp_path).store(tiny_bundle.model_id, _key(), b"engine-bytes")
    rc = cli(["engine", "info", str(tiny_bundle.path), "--cache-dir", str(tmp_path)])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bundle"]["model_id"] == tiny_bundle.model_id
    (entry,) = report["engines"]
    assert entry["key"]["gpu_name"] == "NVIDIA H100 80GB HBM3"
    if "gpu" not in report["this_machine"]:
        assert entry["fits_this_machine"] is False


def test_engine_build_without_tensorrt_fails_clearly(cli, tiny_bundle, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    try:
        create_backend("tensorrt", tiny_bundle, cache_dir=tmp_path)
    except BackendUnavailable:
        pass
    else:
        pytest.skip("TensorRT and a GPU are available here; the gpu tests cover building")
    rc = cli(["engine", "build", str(tiny_bundle.path), "--cache-dir", str(tmp_path)])
    assert rc == 2
    assert "tensorrt is not available" in capsys.readouterr().err


def test_engine_cli_refuses_a_bad_bundle(cli, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli(["engine", "info", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# GPU (tensorrt + NVIDIA GPU); skip cleanly elsewhere


def _tensorrt(bundle, **options):
    try:
        return create_backend("tensorrt", bundle, **options)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.gpu
def test_tensorrt_fp32_parity_and_cache_reuse(tiny_model, tiny_bundle, raw_frames: np.ndarray, tmp_path: Path) -> None:
    backend = _tensorrt(tiny_bundle, cache_dir=tmp_path)
    try:
        info = backend.describe()
        assert {e["source"] for e in info["engines"].values()} == {"built"}
        assert info["precision"] == "fp32"
        backend.warm_up(3)
        w = tiny_bundle.window
        worst = 0.0
        for start in range(0, len(raw_frames) - w, 5):
            frames = raw_frames[start : start + w]
            ref = tiny_model.reference(frames)
            got = backend.infer_whole_window(frames)
            worst = max(worst, *(float(np.abs(a - b).max()) for a, b in zip(got, ref)))
        # fp32 with TF32 off; GPU kernels sum in another order than the CPU
        assert worst <= 1e-4, worst
    finally:
        backend.close()
    again = _tensorrt(tiny_bundle, cache_dir=tmp_path, build=False)
    try:
        assert {e["source"] for e in again.describe()["engines"].values()} == {"cache"}
    finally:
        again.close()


@pytest.mark.gpu
def test_tensorrt_refuses_to_start_without_a_built_engine(tiny_bundle, tmp_path: Path) -> None:
    with pytest.raises(EngineMismatch, match="actionloop engine build"):
        _tensorrt(tiny_bundle, cache_dir=tmp_path / "empty", build=False)


@pytest.mark.gpu
def test_tensorrt_streaming_equals_whole_window_with_cuda_graphs(tiny_bundle, raw_frames: np.ndarray, tmp_path: Path) -> None:
    backend = _tensorrt(tiny_bundle, cache_dir=tmp_path)
    try:
        assert backend.describe()["cuda_graph"] is True
        stream = StreamingDecoder(backend)
        w = tiny_bundle.window
        worst = 0.0
        for i, frame in enumerate(raw_frames):
            probabilities = stream.push(frame)
            if probabilities is not None:
                streamed = probabilities.copy()
                _, whole = backend.infer_whole_window(raw_frames[i - w + 1 : i + 1])
                worst = max(worst, float(np.abs(streamed - whole).max()))
        assert worst <= 1e-4, worst
    finally:
        backend.close()


@pytest.mark.gpu
def test_tensorrt_fp16_is_close(tiny_model, tiny_bundle, raw_frames: np.ndarray, tmp_path: Path) -> None:
    backend = _tensorrt(tiny_bundle, cache_dir=tmp_path, fp16=True)
    try:
        frames = raw_frames[: tiny_bundle.window]
        _, probabilities = backend.infer_whole_window(frames)
        _, reference = tiny_model.reference(frames)
        assert float(np.abs(probabilities - reference).max()) <= 2e-2
    finally:
        backend.close()
