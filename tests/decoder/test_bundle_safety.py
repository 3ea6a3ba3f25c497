"""Bundles are data, never code (issue 14, finding 2).

Each case builds a bundle whose `.pt2` archive was tampered with and whose manifest sha256
values and model id were recomputed to match (what anyone who can write a bundle can do). The
payload would create a marker file; the load must be refused with a clear error and the marker
must not exist. On main, `torch.export.load` ran such payloads (the sample inputs fall back to a
full unpickle when a weights-only load refuses them) and the reload was reported as refused.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from decoder import backends
from decoder.backends import BackendError, create_backend, create_backend_explained
from decoder.backends.safe_pt2 import UnsafeArchive, check_archive
from decoder.model import ReloadNotAllowed, check_reload_allowed
from protocols.bundle import MANIFEST_NAME, BundleError, compute_model_id, load_bundle, sha256_file


class _Payload:
    """Unpickling this creates `marker` (harmless stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def _tampered_bundle(source: Path, out: Path, graph: str, rewrite: Callable[[dict[str, bytes]], dict[str, bytes]] | None = None,
                     whole_file: bytes | None = None) -> Path:
    shutil.copytree(source, out)
    target = out / f"{graph}.pt2"
    if whole_file is not None:
        target.write_bytes(whole_file)
    else:
        with zipfile.ZipFile(target) as z:
            members = {name: z.read(name) for name in z.namelist()}
        assert rewrite is not None
        members = rewrite(members)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            for name, data in members.items():
                z.writestr(name, data)
        target.write_bytes(buffer.getvalue())
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["files"][target.name] = sha256_file(target)
    manifest["model_id"] = compute_model_id(manifest["files"])
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    load_bundle(out)  # the checksums pass: they detect corruption, not tampering
    return out


def _member(members: dict[str, bytes], suffix: str) -> str:
    (name,) = [n for n in members if n.endswith(suffix)]
    return name


def _replace(suffix: str, data_for: Callable[[bytes], bytes]) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    def rewrite(members: dict[str, bytes]) -> dict[str, bytes]:
        name = _member(members, suffix)
        return {**members, name: data_for(members[name])}

    return rewrite


def _edit_json(suffix: str, edit: Callable[[Any], None]) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    def data_for(raw: bytes) -> bytes:
        value = json.loads(raw)
        edit(value)
        return json.dumps(value).encode()

    return _replace(suffix, data_for)


def _pickled_weight(marker: Path) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    def rewrite(members: dict[str, bytes]) -> dict[str, bytes]:
        config_name = _member(members, "data/weights/model_weights_config.json")
        config = json.loads(members[config_name])
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        weight = config_name.rsplit("/", 1)[0] + "/" + first["path_name"]
        return {**members, config_name: json.dumps(config).encode(), weight: pickle.dumps(_Payload(marker))}

    return rewrite


def _with_member(relative: str, data: bytes) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    def rewrite(members: dict[str, bytes]) -> dict[str, bytes]:
        root = next(iter(members)).split("/", 1)[0]
        return {**members, f"{root}/{relative}": data}

    return rewrite


def _node_target(target: str) -> Callable[[Any], None]:
    def edit(program: Any) -> None:
        program["graph_module"]["graph"]["nodes"][0]["target"] = target

    return edit


def _spec_type(type_name: str) -> Callable[[Any], None]:
    def edit(program: Any) -> None:
        entry = program["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(entry["in_spec"])
        spec[1]["type"] = type_name
        entry["in_spec"] = json.dumps(spec)

    return edit


CASES: dict[str, Callable[[Path], dict[str, Any]]] = {
    # the whole .pt2 replaced by a pickle
    "raw_pickle": lambda m: {"whole_file": pickle.dumps(_Payload(m))},
    # torch.load(weights_only=True) refuses this, and torch.export.load then unpickles it fully
    "sample_inputs_pickle": lambda m: {"rewrite": _replace("data/sample_inputs/model.pt", lambda _: pickle.dumps(_Payload(m)))},
    "pickled_weight": lambda m: {"rewrite": _pickled_weight(m)},
    "legacy_weights_file": lambda m: {"rewrite": _with_member("data/weights/model.pt", pickle.dumps(_Payload(m)))},
    "opaque_constant": lambda m: {"rewrite": _with_member("data/constants/opaque_obj_0", pickle.dumps(_Payload(m)))},
    "aoti_library": lambda m: {"rewrite": _with_member("data/aotinductor/model/model.so", b"\x7fELF")},
    "guards_code": lambda m: {"rewrite": _edit_json("models/model.json", lambda p: p.update(
        guards_code=[f"open({str(m)!r}, 'w') is None"]))},
    "python_target": lambda m: {"rewrite": _edit_json("models/model.json", _node_target("torch.os.system"))},
    # sympy.sympify evaluates its string
    "symbolic_shape": lambda m: {"rewrite": _edit_json("models/model.json", lambda p: p["graph_module"]["graph"].update(
        sym_int_values={"s0": {"as_expr": {"expr_str": f"open({str(m)!r}, 'w') and 1", "hint": None}}}))},
    "range_constraints": lambda m: {"rewrite": _edit_json("models/model.json", lambda p: p.update(
        range_constraints={f"open({str(m)!r}, 'w')": {"min_val": 0, "max_val": 8}}))},
    # tree specs and enums name importable types
    "treespec_type": lambda m: {"rewrite": _edit_json("models/model.json", _spec_type("collections.defaultdict"))},
    "node_metadata": lambda m: {"rewrite": _edit_json("models/model.json", lambda p: p["graph_module"]["graph"]["nodes"][0]
                                                      ["metadata"].update(source_fn_stack="x,torch.os.system"))},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_tampered_pt2_is_refused_and_its_payload_never_runs(case: str, tiny_model: Any, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    bundle = _tampered_bundle(tiny_model.bundle_path, tmp_path / "bundle", "temporal", **CASES[case](marker))
    with pytest.raises(UnsafeArchive) as info:
        create_backend("torch", bundle)
    assert "temporal.pt2" in str(info.value)
    assert not marker.exists(), f"{case}: the payload ran"


def test_the_real_export_passes_the_checks(tiny_model: Any) -> None:
    for graph in ("frame_encoder", "temporal", "whole_window"):
        check_archive((tiny_model.bundle_path / f"{graph}.pt2").read_bytes(), graph)


def test_a_pt2_changed_after_verification_is_refused(tiny_model: Any, tmp_path: Path) -> None:
    shutil.copytree(tiny_model.bundle_path, tmp_path / "bundle")
    bundle = load_bundle(tmp_path / "bundle")
    (tmp_path / "bundle" / "temporal.pt2").write_bytes(pickle.dumps(_Payload(tmp_path / "marker")))
    with pytest.raises(UnsafeArchive, match="changed after the bundle was verified"):
        backends.load_backend_class("torch")(bundle)
    assert not (tmp_path / "marker").exists()


# --- auto never falls back silently -----------------------------------------------------------


def _pretend_unavailable(monkeypatch: pytest.MonkeyPatch, missing: dict[str, str]) -> None:
    monkeypatch.setattr(backends, "_unavailable_reason", lambda name: missing.get(name))


class _FailingOnnxRuntime:
    name = "onnxruntime"

    def __init__(self, bundle: Any, **options: Any) -> None:
        raise BackendError("onnxruntime cannot load temporal.onnx: bad graph")


def test_auto_does_not_fall_back_to_torch_when_onnx_runtime_cannot_load_the_bundle(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Any
) -> None:
    # On main, auto took torch here: it loads other files of the bundle (the .pt2 graphs).
    _pretend_unavailable(monkeypatch, {"tensorrt": "no GPU"})
    real = backends.load_backend_class
    monkeypatch.setattr(backends, "load_backend_class",
                        lambda name: _FailingOnnxRuntime if name == "onnxruntime" else real(name))
    with capture_logs() as logs, pytest.raises(BackendError, match="does not fall back to torch"):
        create_backend("auto", tiny_bundle)
    assert any(e["event"].startswith("no ONNX backend could load") for e in logs), logs


def test_auto_says_why_it_chose_torch(monkeypatch: pytest.MonkeyPatch, tiny_bundle: Any) -> None:
    _pretend_unavailable(monkeypatch, {"tensorrt": "no GPU", "onnxruntime": "onnxruntime is not installed"})
    with capture_logs() as logs:
        backend, choice = create_backend_explained("auto", tiny_bundle)
    backend.close()
    assert choice.name == "torch" and "onnxruntime is not installed" in choice.reason
    (warning,) = [e for e in logs if e["backend"] == "torch"]
    assert warning["log_level"] == "warning"


def test_a_fallback_between_onnx_backends_is_flagged(monkeypatch: pytest.MonkeyPatch, tiny_bundle: Any) -> None:
    _pretend_unavailable(monkeypatch, {})
    real = backends.load_backend_class

    class _NoEngine:
        def __init__(self, bundle: Any, **options: Any) -> None:
            raise BackendError("engine build failed")

    monkeypatch.setattr(backends, "load_backend_class", lambda name: _NoEngine if name == "tensorrt" else real(name))
    with capture_logs() as logs:
        backend, choice = create_backend_explained("auto", tiny_bundle, threads=1)
    backend.close()
    assert (choice.name, choice.fell_back) == ("onnxruntime", True)
    assert "engine build failed" in choice.reason
    assert any(e["event"] == "backend chosen after a fallback" and e["log_level"] == "warning" for e in logs)


def test_load_model_reports_the_choice(tiny_model: Any) -> None:
    from decoder.model import load_model
    from decoder.settings import BackendSettings

    model = load_model(tiny_model.bundle_path, BackendSettings(name="onnxruntime", warmup_frames=0))
    model.close()
    assert model.backend_choice == {"name": "onnxruntime", "requested": "onnxruntime",
                                    "reason": "requested by name", "fell_back": False}
    assert model.describe["choice"] == model.backend_choice


# --- reload allow-list ------------------------------------------------------------------------


def test_reload_allow_list(tmp_path: Path) -> None:
    allowed = tmp_path / "models"
    (allowed / "a7").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (allowed / "sneaky").symlink_to(tmp_path / "elsewhere")
    assert check_reload_allowed(tmp_path / "elsewhere", ()) == (tmp_path / "elsewhere").resolve()  # off by default
    assert check_reload_allowed(allowed / "a7", (allowed,)) == (allowed / "a7").resolve()
    for refused in (tmp_path / "elsewhere", allowed / "sneaky", allowed / ".." / "elsewhere", tmp_path / "models-x"):
        with pytest.raises(ReloadNotAllowed, match="reload_allowed_dirs"):
            check_reload_allowed(refused, (allowed,))


# --- ONNX graphs carry their own weights --------------------------------------------------------


def test_onnx_graph_with_external_data_is_refused(tiny_model: Any, tmp_path: Path) -> None:
    import onnx

    out = tmp_path / "bundle"
    shutil.copytree(tiny_model.bundle_path, out)
    model = onnx.load(str(out / "temporal.onnx"))
    onnx.save_model(model, str(out / "temporal.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="temporal.weights", size_threshold=0)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["files"]["temporal.onnx"] = sha256_file(out / "temporal.onnx")
    manifest["model_id"] = compute_model_id(manifest["files"])
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="external data"):
        load_bundle(out)
