"""protocols.bundle: a valid bundle loads; every broken bundle is refused with the error it must give.

The bundles here are built with the ONNX helper API (a linear encoder, no torch), so these
tests run in milliseconds; tests/trainer/test_export.py covers bundles made by the exporter.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from protocols.bundle import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Bundle,
    BundleError,
    Manifest,
    compute_model_id,
    load_bundle,
    sha256_file,
    write_manifest,
)

H, W_PX, WINDOW, F, D, C = 8, 6, 3, 5, 4, 3


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array.astype(np.float32) if array.dtype.kind == "f" else array, name)


def write_synthetic_bundle(directory: Path, *, window: int = WINDOW, frame_shape: tuple[int, int] = (H, W_PX)) -> Path:
    """A small linear model as three ONNX graphs plus a manifest, like the exporter's layout."""
    directory.mkdir(parents=True)
    h, w = frame_shape
    rng = np.random.default_rng(0)
    enc = rng.normal(size=(h * w, F)).astype(np.float32) * 1e-3
    tmp = rng.normal(size=(window * F, D)).astype(np.float32)
    head = rng.normal(size=(D, C)).astype(np.float32)
    shape = lambda *dims: np.array(dims, dtype=np.int64)  # noqa: E731
    tail_nodes = [
        helper.make_node("MatMul", ["flat_features", "temporal_w"], ["embedding"]),
        helper.make_node("MatMul", ["embedding", "head_w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    outputs = [
        helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, D]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, C]),
    ]
    _save(
        helper.make_graph(
            [
                helper.make_node("Cast", ["frame"], ["frame_f"], to=TensorProto.FLOAT),
                helper.make_node("Reshape", ["frame_f", "flat_shape"], ["flat"]),
                helper.make_node("MatMul", ["flat", "enc_w"], ["features"]),
            ],
            "frame_encoder",
            [helper.make_tensor_value_info("frame", TensorProto.UINT16, [1, h, w])],
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, F])],
            [_init("flat_shape", shape(1, h * w)), _init("enc_w", enc)],
        ),
        directory / "frame_encoder.onnx",
    )
    _save(
        helper.make_graph(
            [helper.make_node("Reshape", ["features", "flat_shape"], ["flat_features"]), *tail_nodes],
            "temporal",
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, window, F])],
            outputs,
            [_init("flat_shape", shape(1, window * F)), _init("temporal_w", tmp), _init("head_w", head)],
        ),
        directory / "temporal.onnx",
    )
    _save(
        helper.make_graph(
            [
                helper.make_node("Cast", ["frames"], ["frames_f"], to=TensorProto.FLOAT),
                helper.make_node("Reshape", ["frames_f", "frames_shape"], ["flat"]),
                helper.make_node("MatMul", ["flat", "enc_w"], ["per_frame"]),
                helper.make_node("Reshape", ["per_frame", "flat_shape"], ["flat_features"]),
                *tail_nodes,
            ],
            "whole_window",
            [helper.make_tensor_value_info("frames", TensorProto.UINT16, [1, window, h, w])],
            outputs,
            [
                _init("frames_shape", shape(window, h * w)),
                _init("enc_w", enc),
                _init("flat_shape", shape(1, window * F)),
                _init("temporal_w", tmp),
                _init("head_w", head),
            ],
        ),
        directory / "whole_window.onnx",
    )
    files = {p.name: sha256_file(p) for p in sorted(directory.iterdir())}
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        model_id=compute_model_id(files),
        created_at="2026-01-01T00:00:00+00:00",
        model_name="synthetic_linear",
        window=window,
        frame_rate_hz=30.0,
        frame_shape=frame_shape,
        frame_dtype="uint16",
        feature_dim=F,
        embedding_dim=D,
        class_names=("forward_walking", "resting", "foreleg_grooming"),
        preprocessing={"op": "none"},
        files=files,
    )
    write_manifest(directory, manifest)
    return directory


# ---------------------------------------------------------------------------------------------
# The broken bundles: each a copy of a valid one with one thing wrong, and the error it must give.


def _edit_manifest(path: Path, edit: Callable[[dict], None]) -> None:
    raw = json.loads((path / MANIFEST_NAME).read_text())
    edit(raw)
    (path / MANIFEST_NAME).write_text(json.dumps(raw))


def _relist(raw: dict, path: Path) -> None:
    """Recompute hashes and model id, as an exporter would: only the deliberate fault remains."""
    raw["files"] = {name: sha256_file(path / name) for name in raw["files"]}
    raw["model_id"] = compute_model_id(raw["files"])


def _flip_byte(path: Path) -> None:
    data = bytearray((path / "temporal.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "temporal.onnx").write_bytes(bytes(data))


def _set(key: str, value: object) -> Callable[[Path], None]:
    return lambda path: _edit_manifest(path, lambda raw: raw.__setitem__(key, value))


def _wrong_window_graph(path: Path) -> None:
    other = write_synthetic_bundle(path.parent / f"{path.name}-other", window=WINDOW + 2)
    shutil.copy(other / "temporal.onnx", path / "temporal.onnx")
    _edit_manifest(path, lambda raw: _relist(raw, path))


def _wrong_frame_shape(path: Path) -> None:
    _edit_manifest(path, lambda raw: raw.__setitem__("frame_shape", [H * 2, W_PX * 2]))


def _garbage_graph(path: Path) -> None:
    (path / "whole_window.onnx").write_bytes(b"this is not a protobuf" * 10)
    _edit_manifest(path, lambda raw: _relist(raw, path))


def _extra_listed_file(path: Path) -> None:
    (path / "notes.txt").write_text("added later")
    _edit_manifest(path, lambda raw: raw["files"].__setitem__("notes.txt", sha256_file(path / "notes.txt")))


def _unlisted_required(path: Path) -> None:
    def edit(raw: dict) -> None:
        del raw["files"]["whole_window.onnx"]
        raw["model_id"] = compute_model_id(raw["files"])

    _edit_manifest(path, edit)


def _drop_key(key: str) -> Callable[[Path], None]:
    return lambda path: _edit_manifest(path, lambda raw: raw.pop(key))


def _escape_path(path: Path) -> None:
    def edit(raw: dict) -> None:
        raw["files"]["../frame_encoder.onnx"] = raw["files"]["frame_encoder.onnx"]

    _edit_manifest(path, edit)


@dataclass(frozen=True)
class Broken:
    break_it: Callable[[Path], None]
    reason: str
    message: str  # a fragment the message must contain (what is wrong, named)


BROKEN: dict[str, Broken] = {
    "corrupt_checksum": Broken(_flip_byte, "checksum", "checksum mismatch for 'temporal.onnx'"),
    "missing_file": Broken(lambda p: (p / "whole_window.onnx").unlink(), "missing_file", "'whole_window.onnx'"),
    "missing_manifest": Broken(lambda p: (p / MANIFEST_NAME).unlink(), "missing_file", "no manifest.json"),
    "manifest_not_json": Broken(lambda p: (p / MANIFEST_NAME).write_text("{ nope"), "manifest", "not valid JSON"),
    "manifest_not_object": Broken(lambda p: (p / MANIFEST_NAME).write_text("[1, 2]"), "manifest", "JSON object"),
    "not_a_bundle_format": Broken(_set("format", "something-else"), "manifest", "format is 'something-else'"),
    "newer_schema": Broken(_set("schema_version", SCHEMA_VERSION + 1), "schema", f"schema version {SCHEMA_VERSION + 1} is not supported"),
    "older_schema": Broken(_set("schema_version", 0), "schema", "re-export"),
    "no_schema_version": Broken(_drop_key("schema_version"), "schema", "schema_version is missing"),
    "invalid_window": Broken(_set("window", 0), "manifest", "window"),
    "no_class_names": Broken(_set("class_names", []), "manifest", "class_names"),
    "duplicate_class_names": Broken(_set("class_names", ["a", "a", "b"]), "manifest", "distinct"),
    "unknown_field": Broken(_set("colour", "blue"), "manifest", "colour"),
    "bad_dtype": Broken(_set("frame_dtype", "int64"), "manifest", "frame_dtype"),
    "escaping_file_name": Broken(_escape_path, "manifest", "'../frame_encoder.onnx'"),
    "required_file_unlisted": Broken(_unlisted_required, "manifest", "whole_window.onnx"),
    "tampered_file_list": Broken(_extra_listed_file, "model_id", "does not match its files"),
    "wrong_frame_shape": Broken(_wrong_frame_shape, "graph", "frame_encoder.onnx inputs are frame uint16[1x8x6]"),
    "wrong_window_graph": Broken(_wrong_window_graph, "graph", f"temporal.onnx inputs are features float32[1x{WINDOW + 2}x{F}]"),
    "unreadable_graph": Broken(_garbage_graph, "graph", "whole_window.onnx is not a readable ONNX model"),
}


@pytest.fixture(scope="module")
def valid_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_bundle(tmp_path_factory.mktemp("valid") / "bundle")


@pytest.fixture(scope="module")
def broken_bundles(tmp_path_factory: pytest.TempPathFactory, valid_bundle: Path) -> Path:
    """A folder with one broken copy of the valid bundle per case of BROKEN."""
    root = tmp_path_factory.mktemp("broken")
    for name, case in BROKEN.items():
        shutil.copytree(valid_bundle, root / name)
        case.break_it(root / name)
    return root


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_bundle_is_refused_with_its_error(broken_bundles: Path, case: str) -> None:
    expected = BROKEN[case]
    with pytest.raises(BundleError) as info:
        load_bundle(broken_bundles / case)
    assert info.value.reason == expected.reason, str(info.value)
    assert expected.message in str(info.value)
    assert str(broken_bundles / case) in str(info.value)  # the message names the bundle


def test_valid_bundle_loads_with_its_manifest(valid_bundle: Path) -> None:
    bundle = load_bundle(valid_bundle)
    assert isinstance(bundle, Bundle)
    assert bundle.window == WINDOW
    assert bundle.frame_shape == (H, W_PX)
    assert bundle.frame_dtype == "uint16"
    assert (bundle.feature_dim, bundle.embedding_dim, bundle.num_classes) == (F, D, C)
    assert bundle.model_id == compute_model_id(bundle.manifest.files)
    assert bundle.file("temporal.onnx") == valid_bundle.resolve() / "temporal.onnx"
    assert bundle.summary()["class_names"] == ["forward_walking", "resting", "foreleg_grooming"]


def test_missing_and_non_directory_paths_are_not_found(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist") as info:
        load_bundle(tmp_path / "nowhere")
    assert info.value.reason == "not_found"
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="is not a directory"):
        load_bundle(tmp_path / "file")


def test_unlisted_file_request_is_refused(valid_bundle: Path) -> None:
    bundle = load_bundle(valid_bundle)
    assert not bundle.has_file("frame_encoder.pt2")
    with pytest.raises(BundleError, match="lists no file 'frame_encoder.pt2'"):
        bundle.file("frame_encoder.pt2")


def test_model_id_depends_on_every_file_but_not_on_order() -> None:
    files = {"a.onnx": "0" * 64, "b.onnx": "1" * 64}
    assert compute_model_id(files) == compute_model_id(dict(reversed(list(files.items()))))
    assert compute_model_id(files) != compute_model_id({**files, "b.onnx": "2" * 64})
    assert compute_model_id(files) != compute_model_id({"a.onnx": "0" * 64})


def test_bundle_is_a_value_error_for_callers_that_catch_bad_input() -> None:
    assert issubclass(BundleError, ValueError)


def test_manifest_round_trips_through_json(valid_bundle: Path) -> None:
    manifest = load_bundle(valid_bundle).manifest
    again = Manifest.model_validate_json(manifest.model_dump_json())
    assert again == manifest
    assert manifest.graph_signature("whole_window")["inputs"] == [("frames", "uint16", (1, WINDOW, H, W_PX))]
    with pytest.raises(KeyError, match="unknown graph"):
        manifest.graph_signature("decoder")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(sorted(Manifest.model_fields) + ["extra"]), value=_json_values)
def test_any_manifest_edit_is_accepted_or_refused_with_a_bundle_error(valid_bundle: Path, field: str, value: object) -> None:
    """Fuzz: whatever a field is replaced with, loading either works or raises BundleError; never
    another exception (the daemon reports a BundleError cleanly and keeps the old model)."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "b"
        shutil.copytree(valid_bundle, bundle)
        _edit_manifest(bundle, lambda raw: raw.__setitem__(field, value))
        try:
            load_bundle(bundle)
        except BundleError as exc:
            assert str(exc)
