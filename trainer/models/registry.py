"""Models registered by name, so a checkpoint can rebuild its encoder from `(model_name, model_args)`.

A checkpoint stores the name and the keyword arguments; `build_model(name, **args)` gives back
the same architecture (nanoGPT-style: the artifact carries what is needed to rebuild it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

M = TypeVar("M", bound=type[nn.Module])

MODELS: dict[str, type[nn.Module]] = {}


def register(name: str) -> Callable[[M], M]:
    """Class decorator: make `cls` buildable as `build_model(name, **args)`."""

    def decorate(cls: M) -> M:
        if name in MODELS and MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered to {MODELS[name].__name__}")
        MODELS[name] = cls
        cls.registry_name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def build_model(name: str, **args: Any) -> nn.Module:
    """Build a registered model. Unknown names and bad arguments raise a `ValueError` naming them."""
    try:
        cls = MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS)) or "(none)"
        raise ValueError(f"unknown model {name!r}; registered models: {known}") from None
    try:
        return cls(**args)
    except TypeError as exc:  # wrong/missing keyword: say which model
        raise ValueError(f"cannot build model {name!r} with arguments {sorted(args)}: {exc}") from exc
