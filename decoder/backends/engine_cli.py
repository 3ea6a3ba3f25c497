"""`actionloop engine build|info BUNDLE`: build the cached TensorRT engines of a bundle on this
machine (before an experiment, so the daemon never builds at start-up), or show what is cached
and whether it fits this machine."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = sub.add_parser("build", help="build (or reuse) the TensorRT engines of BUNDLE on this GPU")
    build.add_argument("bundle", type=Path)
    build.add_argument("--fp16", action="store_true", help="allow fp16 kernels (check parity before using)")
    build.add_argument("--force", action="store_true", help="rebuild even if a matching engine is cached")
    build.add_argument("--cache-dir", type=Path, default=None, help="engine cache (default ~/.cache/actionloop/engines)")
    build.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT builder workspace")
    build.add_argument("--no-cuda-graph", action="store_true", help="do not capture CUDA graphs")
    info = sub.add_parser("info", help="show the cached engines of BUNDLE and whether they fit this machine")
    info.add_argument("bundle", type=Path)
    info.add_argument("--cache-dir", type=Path, default=None)


def run(args: argparse.Namespace) -> int:
    from protocols.bundle import BundleError, load_bundle

    try:
        bundle = load_bundle(args.bundle)
    except BundleError as exc:
        log.error("bad bundle", error=str(exc))
        return 1
    if args.action == "build":
        return _build(bundle, args)
    return _info(bundle, args)


def _build(bundle: Any, args: argparse.Namespace) -> int:
    from decoder.backends import BackendError, create_backend

    try:
        backend = create_backend(
            "tensorrt", bundle, fp16=args.fp16, rebuild=args.force, cache_dir=args.cache_dir,
            workspace_mb=args.workspace_mb, cuda_graph=not args.no_cuda_graph,
        )
    except BackendError as exc:
        log.error("engine build failed", error=str(exc))
        return 2
    try:
        backend.warm_up(5)
        print(json.dumps({k: v for k, v in backend.describe().items() if k != "io"}, indent=2))
    finally:
        backend.close()
    return 0


def _info(bundle: Any, args: argparse.Namespace) -> int:
    from decoder.backends import _unavailable_reason
    from decoder.backends.engine_cache import EngineCache

    cache = EngineCache(args.cache_dir)
    entries = cache.entries(bundle.model_id)
    here: dict[str, Any] = {"tensorrt": _unavailable_reason("tensorrt") or "available"}
    if here["tensorrt"] == "available":
        import tensorrt as trt
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            here.update(gpu=props.name, compute_capability=f"{props.major}.{props.minor}", tensorrt_version=trt.__version__)
    for entry in entries:
        entry["fits_this_machine"] = _fits(entry.get("key", {}), here)
    report = {"bundle": bundle.summary(), "cache_dir": str(cache.model_dir(bundle.model_id)), "this_machine": here, "engines": entries}
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _fits(key: dict[str, Any], here: dict[str, Any]) -> bool:
    """Whether an engine's GPU and TensorRT match this machine (the ONNX hash is checked at load)."""
    if "gpu" not in here:
        return False
    return (
        key.get("gpu_name") == here["gpu"]
        and key.get("compute_capability") == here["compute_capability"]
        and key.get("tensorrt_version") == here["tensorrt_version"]
    )
