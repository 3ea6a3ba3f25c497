"""Name lists (class names, joint names) as users give them: inline, or in a JSON file.

    "walk,groom,rest"                   comma-separated, in label order
    names.json holding ["walk", ...]    a list, in label order
    names.json holding {"0": "walk"}    index -> name (any order; indices must be 0..C-1)
    names.json holding {"walk": 0}      name -> index
    names.json holding {"class_names": <any of the above>}   (also "classes", "names",
                                        "actions", "labels", "joint_names", "joints")
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.data.recording import RecordingError

_WRAPPERS = ("class_names", "classes", "names", "actions", "labels", "joint_names", "joints")


def parse_names(value: str | Sequence[str], what: str) -> list[str]:
    """Names from a comma-separated string, a `.json` file path, or a sequence; `what` names them in errors."""
    if not isinstance(value, str):
        return _check(None, [str(v) for v in value], what)
    if value.lower().endswith(".json"):
        return read_names_json(value, what)
    return _check(None, [v.strip() for v in value.split(",")], what)


def read_names_json(path: str | Path, what: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise RecordingError(p, f"{what} file does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordingError(p, f"not a readable JSON file of {what} ({exc})") from None
    if isinstance(data, dict):
        wrapped = [k for k in _WRAPPERS if k in data]
        if wrapped:
            data = data[wrapped[0]]
    return _check(p, _from_json(p, data, what), what)


def _from_json(p: Path, data: Any, what: str) -> list[str]:
    if isinstance(data, list) and all(isinstance(v, str) for v in data):
        return list(data)
    if isinstance(data, dict) and data:
        # index -> name ({"0": "walk"}) or name -> index ({"walk": 0})
        if all(isinstance(v, str) for v in data.values()) and all(_is_int(k) for k in data):
            pairs = {int(k): v for k, v in data.items()}
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
            pairs = {v: str(k) for k, v in data.items()}
        else:
            pairs = {}
        if pairs:
            if sorted(pairs) != list(range(len(pairs))):
                raise RecordingError(p, f"{what} indices are {sorted(pairs)}, expected 0..{len(pairs) - 1} "
                                        "(each label index named once)")
            return [pairs[i] for i in range(len(pairs))]
    raise RecordingError(p, f"expected {what} as a JSON list of strings, an object of index -> name or "
                            f"name -> index, or one of those under a key {', '.join(_WRAPPERS)}; "
                            f"got {type(data).__name__}")


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def _check(p: Path | None, names: list[str], what: str) -> list[str]:
    problem = None
    if not names or any(not n for n in names):
        problem = f"{what} {names!r}: every name must be a non-empty string"
    elif dupes := sorted({n for n in names if names.count(n) > 1}):
        problem = f"{what} repeat {', '.join(dupes)}; each name must be unique"
    if problem is None:
        return names
    raise RecordingError(p, problem) if p is not None else ValueError(problem)
