"""The backend contract, run on every registered backend; plus the registry and `auto`.

Backends that cannot run here (TensorRT without an NVIDIA GPU or without tensorrt) are skipped
with the reason; the TensorRT case also carries the `gpu` marker, so `-m gpu` selects it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

import decoder.backends as backends
from decoder.backends import BACKENDS, Backend, BackendError, BackendUnavailable, create_backend
from decoder.streaming import StreamingDecoder
from protocols.bundle import MANIFEST_NAME, BundleError, compute_model_id

PARITY = 1e-4  # max abs difference against the PyTorch model, fp32 CPU backends
BACKEND_PARAMS = [pytest.param(name, marks=[pytest.mark.gpu] if name == "tensorrt" else []) for name in BACKENDS]


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request: pytest.FixtureRequest, tiny_bundle) -> Backend:
    try:
        created = create_backend(request.param, tiny_bundle)
    except BackendUnavailable as exc:
        pytest.skip(f"{request.param}: {exc}")
    yield created
    created.close()


def test_backend_satisfies_the_protocol_and_describes_itself(backend: Backend, tiny_bundle) -> None:
    assert isinstance(backend, Backend)
    info = backend.describe()
    json.dumps(info)  # plain data: goes into status messages and logs
    assert info["backend"] == backend.name
    assert info["model_id"] == tiny_bundle.model_id
    assert info["io"]["frame_encoder"]["inputs"] == [{"name": "frame", "dtype": "uint16", "shape": [1, 32, 32]}]


def test_outputs_have_the_manifest_shapes(backend: Backend, tiny_bundle, raw_frames: np.ndarray) -> None:
    backend.warm_up(2)
    w = tiny_bundle.window
    features = backend.encode_frame(raw_frames[0])
    assert features.shape == (tiny_bundle.feature_dim,) and features.dtype == np.float32
    embedding, probabilities = backend.decode_window(np.zeros((w, tiny_bundle.feature_dim), np.float32))
    assert embedding.shape == (tiny_bundle.embedding_dim,) and embedding.dtype == np.float32
    assert probabilities.shape == (tiny_bundle.num_classes,) and probabilities.dtype == np.float32
    embedding, probabilities = backend.infer_whole_window(raw_frames[:w])
    assert probabilities.shape == (tiny_bundle.num_classes,)
    assert abs(float(probabilities.sum()) - 1.0) < 1e-5 and (probabilities >= 0).all()


def test_parity_with_the_pytorch_model(backend: Backend, tiny_model, tiny_bundle, raw_frames: np.ndarray) -> None:
    """Same raw frames through PyTorch and through the backend: same features, embedding, probabilities."""
    w = tiny_bundle.window
    worst = {"features": 0.0, "embedding": 0.0, "probabilities": 0.0}
    for frame in raw_frames[:12]:
        got = backend.encode_frame(frame)
        worst["features"] = max(worst["features"], float(np.abs(got - tiny_model.reference_features(frame)).max()))
    for start in range(0, len(raw_frames) - w, 3):
        frames = raw_frames[start : start + w]
        ref_embedding, ref_probabilities = tiny_model.reference(frames)
        embedding, probabilities = backend.infer_whole_window(frames)
        worst["embedding"] = max(worst["embedding"], float(np.abs(embedding - ref_embedding).max()))
        worst["probabilities"] = max(worst["probabilities"], float(np.abs(probabilities - ref_probabilities).max()))
    assert max(worst.values()) <= PARITY, worst


def test_streaming_equals_whole_window(backend: Backend, tiny_bundle, raw_frames: np.ndarray) -> None:
    w = tiny_bundle.window
    stream = StreamingDecoder(backend, w)
    worst = 0.0
    for i, frame in enumerate(raw_frames):
        probabilities = stream.push(frame)
        if i < w - 1:
            assert probabilities is None
            continue
        streamed = probabilities.copy()
        streamed_embedding = stream.last_embedding.copy()
        embedding, whole = backend.infer_whole_window(raw_frames[i - w + 1 : i + 1])
        worst = max(worst, float(np.abs(streamed - whole).max()), float(np.abs(streamed_embedding - embedding).max()))
    assert worst <= 1e-5, worst


def test_results_live_in_preallocated_buffers(backend: Backend, tiny_bundle, raw_frames: np.ndarray) -> None:
    """The hot path hands back the same output buffers every call instead of allocating new ones."""
    w = tiny_bundle.window
    first = backend.encode_frame(raw_frames[0])
    features_ptr, features_copy = first.ctypes.data, first.copy()
    second = backend.encode_frame(raw_frames[1])
    assert second.ctypes.data == features_ptr
    assert not np.array_equal(second, features_copy)  # overwritten in place: copy to keep
    window_features = np.zeros((w, tiny_bundle.feature_dim), np.float32)
    pointers = [a.ctypes.data for a in backend.decode_window(window_features)]
    assert [a.ctypes.data for a in backend.decode_window(window_features + 1)] == pointers
    pointers = [a.ctypes.data for a in backend.infer_whole_window(raw_frames[:w])]
    assert [a.ctypes.data for a in backend.infer_whole_window(raw_frames[1 : w + 1])] == pointers


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((32, 31), np.uint16), r"shape \(32, 31\)"),
        (np.zeros((32, 32), np.float32), "float32"),
        (np.zeros((1, 32, 32), np.uint16), r"shape \(1, 32, 32\)"),
    ],
)
def test_wrong_frames_are_refused_not_cast(backend: Backend, bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        backend.encode_frame(bad)


def test_wrong_windows_are_refused(backend: Backend, tiny_bundle) -> None:
    w, f = tiny_bundle.window, tiny_bundle.feature_dim
    with pytest.raises(ValueError, match="features are"):
        backend.decode_window(np.zeros((w + 1, f), np.float32))
    with pytest.raises(ValueError, match="features are"):
        backend.decode_window(np.zeros((w, f), np.float64))
    with pytest.raises(ValueError, match="frames are"):
        backend.infer_whole_window(np.zeros((w - 1, 32, 32), np.uint16))


def test_close_twice_is_harmless(tiny_bundle) -> None:
    for name in ("onnxruntime", "torch"):
        backend = create_backend(name, tiny_bundle)
        backend.close()
        backend.close()


# ---------------------------------------------------------------------------------------------
# Registry and auto


def _pretend_unavailable(monkeypatch: pytest.MonkeyPatch, missing: dict[str, str]) -> None:
    """Simulate a machine without some backends (no GPU here to test the others with)."""
    monkeypatch.setattr(backends, "_unavailable_reason", lambda name: missing.get(name))


def test_auto_takes_onnxruntime_without_tensorrt_and_says_why(monkeypatch: pytest.MonkeyPatch, tiny_bundle) -> None:
    _pretend_unavailable(monkeypatch, {"tensorrt": "tensorrt is not installed"})
    with capture_logs() as logs:
        backend = create_backend("auto", tiny_bundle)
    backend.close()
    assert backend.name == "onnxruntime"
    (chosen,) = [entry for entry in logs if entry["event"] == "backend chosen"]
    assert chosen["backend"] == "onnxruntime"
    assert "tensorrt is not installed" in chosen["reason"]


def test_auto_falls_back_to_torch_then_refuses(monkeypatch: pytest.MonkeyPatch, tiny_bundle) -> None:
    _pretend_unavailable(monkeypatch, {"tensorrt": "no GPU", "onnxruntime": "onnxruntime is not installed"})
    backend = create_backend("auto", tiny_bundle)
    backend.close()
    assert backend.name == "torch"
    _pretend_unavailable(monkeypatch, {"tensorrt": "no GPU", "onnxruntime": "gone", "torch": "gone too"})
    with pytest.raises(BackendUnavailable, match="no inference backend"):
        create_backend("auto", tiny_bundle)


class _FailingBackend:
    def __init__(self, bundle, **options) -> None:
        raise BackendError("engine build failed: out of workspace")


def test_auto_moves_on_when_the_best_backend_fails_to_load(monkeypatch: pytest.MonkeyPatch, tiny_bundle) -> None:
    _pretend_unavailable(monkeypatch, {})
    real = backends.load_backend_class
    monkeypatch.setattr(backends, "load_backend_class", lambda name: _FailingBackend if name == "tensorrt" else real(name))
    with capture_logs() as logs:
        backend = create_backend("auto", tiny_bundle, threads=1)
    backend.close()
    assert backend.name == "onnxruntime"
    assert any(e["event"] == "backend failed to load, trying the next" and "engine build failed" in e["error"] for e in logs), logs


def test_a_named_backend_that_cannot_run_is_refused(monkeypatch: pytest.MonkeyPatch, tiny_bundle) -> None:
    _pretend_unavailable(monkeypatch, {"tensorrt": "no NVIDIA GPU visible"})
    with pytest.raises(BackendUnavailable, match="tensorrt is not available: no NVIDIA GPU visible"):
        create_backend("tensorrt", tiny_bundle)


def test_unknown_backend_and_unknown_option_are_named(tiny_bundle) -> None:
    with pytest.raises(ValueError, match="unknown backend 'tflite'"):
        create_backend("tflite", tiny_bundle)
    with pytest.raises(TypeError, match="fp16"):
        create_backend("onnxruntime", tiny_bundle, fp16=True)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        create_backend("onnxruntime", tiny_bundle, threads=0)


def test_onnxruntime_options_are_reported(tiny_bundle) -> None:
    backend = create_backend("onnxruntime", tiny_bundle, threads=2)
    info = backend.describe()
    backend.close()
    assert info["threads"] == 2 and info["execution_mode"] == "sequential" and info["spinning"] is False


def test_create_backend_verifies_a_bundle_path(tiny_model, tmp_path: Path) -> None:
    backend = create_backend("onnxruntime", tiny_model.bundle_path)
    backend.close()
    broken = tmp_path / "bundle"
    shutil.copytree(tiny_model.bundle_path, broken)
    data = bytearray((broken / "frame_encoder.onnx").read_bytes())
    data[-10] ^= 0x01
    (broken / "frame_encoder.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch for 'frame_encoder.onnx'"):
        create_backend("onnxruntime", broken)


def test_torch_backend_needs_the_pt2_files(tiny_model, tmp_path: Path) -> None:
    from protocols.bundle import load_bundle

    bundle_dir = tmp_path / "onnx-only"
    shutil.copytree(tiny_model.bundle_path, bundle_dir)
    manifest = json.loads((bundle_dir / MANIFEST_NAME).read_text())
    for name in [n for n in manifest["files"] if n.endswith(".pt2")]:
        del manifest["files"][name]
        (bundle_dir / name).unlink()
    manifest["model_id"] = compute_model_id(manifest["files"])
    (bundle_dir / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BackendUnavailable, match="has no frame_encoder.pt2"):
        create_backend("torch", load_bundle(bundle_dir))
