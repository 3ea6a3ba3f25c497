"""Load a bundle's torch.export archive (`.pt2`) as data, never as code.

`torch.export.load` is not safe on untrusted files: it unpickles (weights or constants marked
`use_pickle`, "opaque" constants, and the sample inputs, where a refused weights-only load falls
back to a full unpickle), it compiles the archive's `guards_code` strings into Python, it
resolves node targets by attribute lookup from the `torch` module (`torch.os.system` is such a
path), it evaluates symbolic-shape strings with `sympy.sympify`, it imports the modules its tree
specs name, and it loads AOTInductor shared libraries. The manifest's sha256 values detect
corruption, not tampering: anyone who can write a bundle can recompute them.

`load_program` therefore reads the file once, checks its bytes against the manifest's sha256,
and refuses (`UnsafeArchive`, naming the member and the problem) every archive that is not plain
data of the shape `torch.export.save` writes for this project's graphs:

- a zip whose members all sit under one root and are on an allow-list of names (archive
  markers, `models/model.json`, raw weight and tensor-constant payloads, their JSON configs, the
  sample inputs); no AOTInductor code, no extra files, no legacy pickled weight files;
- configs in which no payload is pickled and every payload is a raw tensor file of the archive;
- a program whose `guards_code` is empty, that has no symbolic shapes (sympy parses those by
  evaluating strings), holds no custom objects, names no Python types (input/output tree specs
  of tuples, lists and dicts only; no namedtuples, enums or module metadata; node metadata only
  `stack_trace`, `nn_module_stack`, `torch_fn`), and whose every node target (nested graphs
  included) is an ATen or prims operator (`torch.ops.aten.*.*`);
- sample inputs that load with `torch.load(..., weights_only=True)` (a restricted unpickler
  that builds tensors and containers only), so torch's fallback to a full unpickle never runs.

Only then are the same bytes (not the file again) handed to `torch.export.load`, with
`TORCH_FORCE_WEIGHTS_ONLY_LOAD=1` set for the call so that any `torch.load` reached inside it is
weights-only too.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from decoder.backends.base import BackendError

MAX_ARCHIVE_BYTES = 2 * 1024**3
MAX_JSON_BYTES = 64 * 1024**2

_ALLOWED_MEMBERS = (
    re.compile(r"archive_format"),
    re.compile(r"archive_version"),
    re.compile(r"byteorder"),
    re.compile(r"\.data/version"),
    re.compile(r"\.data/serialization_id"),
    re.compile(r"models/model\.json"),
    re.compile(r"data/weights/model_weights_config\.json"),
    re.compile(r"data/weights/weight_[0-9]+"),
    re.compile(r"data/constants/model_constants_config\.json"),
    re.compile(r"data/constants/tensor_[0-9]+"),
    re.compile(r"data/sample_inputs/model\.pt"),
)
_REQUIRED_MEMBERS = (
    "archive_format",
    "models/model.json",
    "data/weights/model_weights_config.json",
    "data/constants/model_constants_config.json",
    "data/sample_inputs/model.pt",
)
_OPERATOR = re.compile(r"torch\.ops\.(aten|prims)\.[A-Za-z0-9_]+\.[A-Za-z0-9_]+")
_PAYLOAD = {"data/weights/model_weights_config.json": re.compile(r"weight_[0-9]+"),
            "data/constants/model_constants_config.json": re.compile(r"tensor_[0-9]+")}

_ENV_LOCK = threading.Lock()


class UnsafeArchive(BackendError):
    """A `.pt2` file that is not plain data (or not what the manifest says); the message says why."""


def load_program(path: Path, expected_sha256: str) -> Any:
    """The `torch.export.ExportedProgram` in `path`, after the checks in the module docstring."""
    data = _read(path)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise UnsafeArchive(
            f"{path}: sha256 {actual[:16]}... differs from the manifest's {expected_sha256[:16]}... "
            "(the file changed after the bundle was verified)"
        )
    check_archive(data, path)
    import torch

    with _weights_only_loads():
        try:
            return torch.export.load(io.BytesIO(data))
        except Exception as exc:  # torch raises several types for a bad archive
            raise BackendError(f"torch cannot load {path}: {exc}") from exc


def check_archive(data: bytes, path: Path | str = "<bytes>") -> None:
    """Raise UnsafeArchive unless `data` is a `.pt2` archive of plain data (module docstring)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise UnsafeArchive(f"{path}: not a torch.export archive (not a zip file: {exc})") from None
    with archive:
        members = _members(archive, path)
        if archive.read(members["archive_format"]) != b"pt2":
            raise UnsafeArchive(f"{path}: archive_format is not 'pt2'")
        for name, pattern in _PAYLOAD.items():
            _check_payload_config(_json(archive, members[name], path), pattern, name, members, path)
        program = _json(archive, members["models/model.json"], path)
        _check_program(program, path)
        _check_sample_inputs(archive.read(members["data/sample_inputs/model.pt"]), path)


def _read(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_ARCHIVE_BYTES:
            raise UnsafeArchive(f"{path}: {size} bytes is more than a reference graph needs ({MAX_ARCHIVE_BYTES})")
        return path.read_bytes()
    except OSError as exc:
        raise BackendError(f"cannot read {path}: {exc}") from None


def _members(archive: zipfile.ZipFile, path: Path | str) -> dict[str, str]:
    """Relative member name -> full name, every member on the allow-list, one common root."""
    roots = set()
    members: dict[str, str] = {}
    for info in archive.infolist():
        full = info.filename
        root, _, relative = full.partition("/")
        if not root or not relative or full.startswith("/") or ".." in full.split("/") or "\\" in full:
            raise UnsafeArchive(f"{path}: archive member {full!r} is not under one root directory")
        roots.add(root)
        if info.is_dir():
            continue
        if not any(p.fullmatch(relative) for p in _ALLOWED_MEMBERS):
            raise UnsafeArchive(
                f"{path}: archive member {relative!r} is not plain graph data (refused: pickled, compiled "
                "or unknown content); re-export the bundle with this actionloop"
            )
        members[relative] = full
    if len(roots) != 1:
        raise UnsafeArchive(f"{path}: archive members sit under {len(roots)} roots, expected one")
    missing = [name for name in _REQUIRED_MEMBERS if name not in members]
    if missing:
        raise UnsafeArchive(f"{path}: archive lacks {', '.join(missing)}")
    return members


def _json(archive: zipfile.ZipFile, member: str, path: Path | str) -> Any:
    info = archive.getinfo(member)
    if info.file_size > MAX_JSON_BYTES:
        raise UnsafeArchive(f"{path}: {member} is {info.file_size} bytes")
    try:
        return json.loads(archive.read(member))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsafeArchive(f"{path}: {member} is not JSON ({exc})") from None


def _check_payload_config(
    config: Any, pattern: re.Pattern[str], name: str, members: dict[str, str], path: Path | str
) -> None:
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise UnsafeArchive(f"{path}: {name} has no 'config' map")
    directory = name.rsplit("/", 1)[0]
    for fqn, meta in entries.items():
        if not isinstance(meta, dict):
            raise UnsafeArchive(f"{path}: {name}: entry {fqn!r} is not a map")
        if meta.get("use_pickle") is not False:
            raise UnsafeArchive(f"{path}: {name}: {fqn!r} is stored as a pickle; refused (bundles are data, not code)")
        file_name = meta.get("path_name")
        if not isinstance(file_name, str) or not pattern.fullmatch(file_name):
            raise UnsafeArchive(f"{path}: {name}: {fqn!r} is not a raw tensor payload ({file_name!r})")
        if f"{directory}/{file_name}" not in members:
            raise UnsafeArchive(f"{path}: {name}: payload {file_name!r} of {fqn!r} is missing")
        if not isinstance(meta.get("tensor_meta"), dict):
            raise UnsafeArchive(f"{path}: {name}: {fqn!r} has no tensor description")


_NODE_METADATA = frozenset({"stack_trace", "nn_module_stack", "torch_fn"})
_TREESPEC_TYPES = frozenset({None, "builtins.tuple", "builtins.list", "builtins.dict"})


def _check_program(program: Any, path: Path | str) -> None:
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise UnsafeArchive(f"{path}: models/model.json is not an exported program")
    if program.get("guards_code") not in (None, []):
        raise UnsafeArchive(f"{path}: the program carries guards_code (Python source); refused")
    # Symbolic shapes are parsed with sympy.sympify (which evaluates its string): the bundle's
    # graphs have static shapes, so there must be none.
    if program.get("range_constraints") not in (None, {}) or _has_key(program, "expr_str"):
        raise UnsafeArchive(f"{path}: the program has symbolic shapes (parsed by evaluating strings); refused")
    module = program["graph_module"]
    if module.get("treespec_namedtuple_fields") not in (None, {}) or module.get("metadata") not in (None, {}):
        raise UnsafeArchive(f"{path}: the program names Python types (namedtuples or module metadata); refused")
    for graph in _graphs(program):
        if graph.get("custom_obj_values"):
            raise UnsafeArchive(f"{path}: the program holds custom (pickled or compiled) objects; refused")
        for kind in ("sym_int_values", "sym_bool_values", "sym_float_values"):
            if graph.get(kind):
                raise UnsafeArchive(f"{path}: the program has symbolic values ({kind}); refused")
        for item in graph["nodes"]:
            extra = set((item.get("metadata") or {}) if isinstance(item, dict) else ()) - _NODE_METADATA
            if extra:
                raise UnsafeArchive(f"{path}: graph node metadata {sorted(extra)} names Python objects; refused")
    for target in _targets(program):
        if not isinstance(target, str) or not _OPERATOR.fullmatch(target):
            raise UnsafeArchive(
                f"{path}: graph node target {str(target)[:80]!r} is not an ATen/prims operator; refused"
            )
    # Tree specs (how inputs and outputs nest) may name any importable type; ours are tuples.
    for spec in _strings_under(program, ("in_spec", "out_spec")):
        for type_name in _spec_types(spec, path):
            if type_name not in _TREESPEC_TYPES:
                raise UnsafeArchive(f"{path}: input/output spec names type {str(type_name)[:80]!r}; refused")


def _has_key(node: Any, key: str) -> bool:
    if isinstance(node, dict):
        return key in node or any(_has_key(v, key) for v in node.values())
    if isinstance(node, list):
        return any(_has_key(v, key) for v in node)
    return False


def _strings_under(node: Any, keys: tuple[str, ...]) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in keys and isinstance(v, str):
                yield v
            else:
                yield from _strings_under(v, keys)
    elif isinstance(node, list):
        for v in node:
            yield from _strings_under(v, keys)


def _spec_types(spec: str, path: Path | str) -> Iterator[Any]:
    if "__enum__" in spec:
        raise UnsafeArchive(f"{path}: input/output spec names an enum type; refused")
    try:
        parsed = json.loads(spec)
    except json.JSONDecodeError:
        raise UnsafeArchive(f"{path}: input/output spec is not JSON") from None

    def walk(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            if "type" in node:
                yield node["type"]
            for child in node.get("children_spec") or ():
                yield from walk(child)
        elif isinstance(node, list):
            for child in node:
                yield from walk(child)

    yield from walk(parsed)


def _graphs(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "nodes" in node and isinstance(node.get("nodes"), list):
            yield node
        for value in node.values():
            yield from _graphs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _graphs(value)


def _targets(node: Any) -> Iterator[Any]:
    """Every node's `target` in every graph of the program, nested graphs included."""
    for graph in _graphs(node):
        for item in graph["nodes"]:
            if not isinstance(item, dict) or "target" not in item:
                raise UnsafeArchive("graph node without a target")
            yield item["target"]


def _check_sample_inputs(data: bytes, path: Path | str) -> None:
    import torch

    try:
        loaded = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # the restricted unpickler refuses anything but tensors and containers
        raise UnsafeArchive(
            f"{path}: sample inputs are not plain tensors (a weights-only load refused them: "
            f"{type(exc).__name__}); refused"
        ) from None
    if not isinstance(loaded, (tuple, dict)):
        raise UnsafeArchive(f"{path}: sample inputs are a {type(loaded).__name__}, expected a tuple")


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Every `torch.load` inside this block is weights-only, whatever its caller asks for."""
    with _ENV_LOCK:
        previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
            else:
                os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous
