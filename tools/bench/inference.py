"""`actionloop bench`: per-backend inference latency, streaming vs whole-window, in one run.

For every backend that can run here (or those named with --backends), after warm-up:

* streaming:    the cost of one `StreamingDecoder.push(frame)` (encode the new frame once, run
                the temporal part over the ring buffer) -- what the daemon does per frame;
* whole_window: the cost of one `infer_whole_window(last W frames)` -- re-encoding the whole
                window for every new frame, the naive alternative;
* parts:        `encode_frame` and `decode_window` alone, the floors streaming is made of;
* streaming_online_centring: streaming through the bundle's online centring
                (decoder/adaptation.py), for bundles that have one; its cost over streaming is
                the centring's.

The modes run in interleaved blocks (so drift on a shared machine hits both alike), with the
garbage collector paused inside blocks, over >= 2,000 timed frames each. Percentiles are
p50/p99/p99.9/max in microseconds of wall time; the ratio is whole_window / streaming at p50.
`cpu_time` holds the same for the calling thread's CPU time, the per-frame cost without the
time a busy machine keeps the process off the CPU (the wall-time tails are the machine's, the
CPU time is the model's). Written as JSON (`--out`), printed as a table, and drawn as latency
CDFs next to the JSON (`.png`).

Without --bundle, a default bundle is exported from the default model with untrained weights
at 256 x 256 uint16, window 8 (the speed of a network does not depend on its weights); the
report says so.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import structlog

log = structlog.get_logger(__name__)

DEFAULT_FRAME_SHAPE = (256, 256)
DEFAULT_WINDOW = 8
MODES = ("streaming", "streaming_online_centring", "whole_window", "encode_frame", "decode_window")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, default=None, help="model bundle (default: an untrained default model)")
    parser.add_argument("--out", type=Path, default=Path("bench/inference.json"), help="JSON report (a .png goes beside it)")
    parser.add_argument("--backends", default="available", help="comma-separated names, or 'available' (all that run here)")
    parser.add_argument("--frames", type=int, default=2000, help="timed frames per mode and backend (>= 2000 for p99.9)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed frames per mode first")
    parser.add_argument("--block", type=int, default=50, help="frames per mode in each interleaved block")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (ONNX Runtime, PyTorch)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def percentiles(samples_ns: np.ndarray) -> dict[str, float]:
    us = samples_ns.astype(np.float64) / 1e3
    return {
        "n": int(us.size),
        "p50_us": round(float(np.percentile(us, 50)), 2),
        "p99_us": round(float(np.percentile(us, 99)), 2),
        "p999_us": round(float(np.percentile(us, 99.9)), 2),
        "max_us": round(float(us.max()), 2),
        "mean_us": round(float(us.mean()), 2),
    }


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    return info


def _default_bundle(directory: Path) -> Path:
    """Export the default model, untrained, at 256 x 256 uint16 and window 8."""
    import torch

    from trainer.adaptation import OnlineCentring
    from trainer.config import AdaptationConfig, ModelConfig
    from trainer.data.schema import ACTION_NAMES
    from trainer.export import export_model
    from trainer.models import DEFAULT_NEURAL_MODEL, build_model

    torch.manual_seed(0)
    # the training default's normalisation, so the timed graph holds what a deployed one does
    # (session models: the alignment GridSample and baseline subtraction, here at identity)
    normalise = ModelConfig().normalise
    model = build_model(DEFAULT_NEURAL_MODEL, frame_shape=list(DEFAULT_FRAME_SHAPE), window=DEFAULT_WINDOW,
                        normalise=normalise).eval()
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.1, (len(ACTION_NAMES), model.embedding_dim)).astype(np.float32)
    bias = np.zeros(len(ACTION_NAMES), np.float32)
    out = directory / "default-untrained"
    adaptation = AdaptationConfig()  # a deployed default bundle carries the online centring
    centring = OnlineCentring.from_seconds(adaptation.prior_s, adaptation.time_constant_s, 30.0)
    export_model(
        model, weight, bias, ACTION_NAMES, out, frame_rate_hz=30.0,
        provenance={"note": "untrained weights, made by `actionloop bench` for timing only"}, progress=True,
        adaptation=centring.bundle_record(weight, bias),
    )
    return out


def _time_block(call: Callable[[int], Any], start: int, n: int, wall: np.ndarray, cpu: np.ndarray) -> None:
    """Wall time (what a frame waits) and this thread's CPU time (what it costs, immune to being
    descheduled on a busy machine; inference runs on the calling thread with 1 intra-op thread)."""
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for i in range(start, start + n):
        c0 = cpu_clock()
        t0 = clock()
        call(i)
        t1 = clock()
        cpu[i] = cpu_clock() - c0
        wall[i] = t1 - t0


def bench_backend(backend: Any, frames: np.ndarray, n_frames: int, warmup: int, block: int, progress: Any) -> dict[str, Any]:
    """Time every mode of one backend; returns `{mode: percentiles}` plus the p50 ratio."""
    from decoder.adaptation import OnlineCentredDecoder
    from decoder.streaming import StreamingDecoder

    bundle = backend.bundle
    w = bundle.window
    pool = len(frames)
    # raw frames twice over: the last W frames before frame i are one contiguous view
    doubled = np.concatenate([frames, frames])
    features = np.ascontiguousarray(np.random.default_rng(1).normal(size=(w, bundle.feature_dim)).astype(np.float32))
    stream = StreamingDecoder(backend, w)
    for frame in frames[:w]:
        stream.push(frame)
    calls: dict[str, Callable[[int], Any]] = {
        "streaming": lambda i: stream.push(frames[i % pool]),
        "whole_window": lambda i: backend.infer_whole_window(doubled[i % pool : i % pool + w]),
        "encode_frame": lambda i: backend.encode_frame(frames[i % pool]),
        "decode_window": lambda i: backend.decode_window(features),
    }
    if bundle.adaptation is not None:
        centred = OnlineCentredDecoder(StreamingDecoder(backend, w), bundle.adaptation)
        calls["streaming_online_centring"] = lambda i: centred.push(frames[i % pool])
    modes = [m for m in MODES if m in calls]
    for mode in modes:  # warm-up: caches, allocator, ORT arenas, CUDA graphs
        for i in range(warmup):
            calls[mode](i)
    samples = {mode: np.zeros(n_frames, np.int64) for mode in modes}
    cpu_samples = {mode: np.zeros(n_frames, np.int64) for mode in modes}
    done = 0
    gc_was_enabled = gc.isenabled()
    try:
        while done < n_frames:
            n = min(block, n_frames - done)
            for mode in modes:
                gc.disable()
                _time_block(calls[mode], done, n, samples[mode], cpu_samples[mode])
                if gc_was_enabled:
                    gc.enable()
                progress.update(n)
            done += n
    finally:
        if gc_was_enabled:
            gc.enable()
    result: dict[str, Any] = {mode: percentiles(samples[mode]) for mode in ("streaming", "whole_window")}
    result["parts"] = {mode: percentiles(samples[mode]) for mode in ("encode_frame", "decode_window")}
    result["whole_window_over_streaming_p50"] = round(
        result["whole_window"]["p50_us"] / result["streaming"]["p50_us"], 2
    )
    if "streaming_online_centring" in samples:
        result["streaming_online_centring"] = percentiles(samples["streaming_online_centring"])
    result["cpu_time"] = {mode: percentiles(cpu_samples[mode]) for mode in modes}
    result["cpu_time"]["whole_window_over_streaming_p50"] = round(
        result["cpu_time"]["whole_window"]["p50_us"] / max(result["cpu_time"]["streaming"]["p50_us"], 1e-3), 2
    )
    result["describe"] = {k: v for k, v in backend.describe().items() if k != "io"}
    result["_samples_ns"] = samples
    return result


def paced_streaming(backend: Any, frames: np.ndarray, n_frames: int, interval_s: float) -> np.ndarray:
    """Streaming inference alone, one call per `interval_s` (sleeping in between on absolute
    deadlines), as it runs in a daemon fed at that rate; wall ns per call.

    A tight loop keeps the core busy and its caches warm; a core that sleeps 33 ms between
    frames wakes up cold (on a virtual machine the vCPU is halted and given back to the host),
    and the same call costs several times more. This measures that, with nothing but the
    backend: no socket, no other thread.
    """
    from decoder.streaming import StreamingDecoder

    stream = StreamingDecoder(backend, backend.bundle.window)
    pool = len(frames)
    out = np.zeros(n_frames, np.int64)
    clock, interval_ns = time.perf_counter_ns, int(interval_s * 1e9)
    start = clock() + interval_ns
    for i in range(n_frames):
        remaining = start + i * interval_ns - clock()
        if remaining > 0:
            time.sleep(remaining / 1e9)
        t0 = clock()
        stream.push(frames[i % pool])
        out[i] = clock() - t0
    return out


def parity(backends: dict[str, Any], frames: np.ndarray, windows: int = 50) -> dict[str, dict[str, float]]:
    """Max abs differences of every backend against the PyTorch reference backend on the same
    raw frames (streaming features, whole-window embedding and probabilities)."""
    reference = backends.get("torch")
    if reference is None:
        return {}
    w = reference.bundle.window
    doubled = np.concatenate([frames, frames])
    out: dict[str, dict[str, float]] = {}
    for name, backend in backends.items():
        if name == "torch":
            continue
        worst = {"features": 0.0, "embedding": 0.0, "probabilities": 0.0}
        for i in range(windows):
            window = doubled[i % len(frames) : i % len(frames) + w]
            got = [a.copy() for a in backend.infer_whole_window(window)]
            ref = reference.infer_whole_window(window)
            worst["embedding"] = max(worst["embedding"], float(np.abs(got[0] - ref[0]).max()))
            worst["probabilities"] = max(worst["probabilities"], float(np.abs(got[1] - ref[1]).max()))
            got_features = backend.encode_frame(window[-1]).copy()
            worst["features"] = max(worst["features"], float(np.abs(got_features - reference.encode_frame(window[-1])).max()))
        out[name] = {k: float(f"{v:.3g}") for k, v in worst.items()}
    return out


def _plot(results: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    styles = {"streaming": "-", "whole_window": "--"}
    for name, result in results.items():
        for mode, style in styles.items():
            us = np.sort(result["_samples_ns"][mode]) / 1e3
            ax.plot(us, np.arange(1, us.size + 1) / us.size, style, label=f"{name} {mode.replace('_', '-')}")
    ax.set_xscale("log")
    ax.set_xlabel("latency per frame (µs, log scale)")
    ax.set_ylabel("fraction of frames")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _table(results: dict[str, Any]) -> str:
    header = f"{'backend':<12} {'mode':<14} {'p50 µs':>9} {'p99 µs':>9} {'p99.9 µs':>9} {'max µs':>9}"
    lines = [header, "-" * len(header)]
    for name, result in results.items():
        rows = [("streaming", result["streaming"]), ("whole_window", result["whole_window"])]
        if "streaming_online_centring" in result:
            rows.insert(1, ("stream+centring", result["streaming_online_centring"]))
        rows += [(f" {k}", v) for k, v in result["parts"].items()]
        for mode, p in rows:
            lines.append(f"{name:<12} {mode:<14} {p['p50_us']:>9.1f} {p['p99_us']:>9.1f} {p['p999_us']:>9.1f} {p['max_us']:>9.1f}")
        lines.append(f"{name:<12} {'whole/stream':<14} {result['whole_window_over_streaming_p50']:>8.2f}x (p50 wall)")
        cpu = result["cpu_time"]
        lines.append(
            f"{name:<12} {'cpu per frame':<14} streaming {cpu['streaming']['p50_us']:.1f} µs, whole-window "
            f"{cpu['whole_window']['p50_us']:.1f} µs: {cpu['whole_window_over_streaming_p50']:.2f}x (p50 thread CPU time)"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from decoder.backends import BACKENDS, BackendError, _unavailable_reason, create_backend
    from decoder.backends.base import synthetic_frames
    from protocols.bundle import BundleError, load_bundle

    load_at_start = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    if args.frames < 1 or args.warmup < 0 or args.block < 1:
        log.error("bad arguments", frames=args.frames, warmup=args.warmup, block=args.block)
        return 2
    if args.frames < 2000:
        log.warning("fewer than 2000 timed frames: p99.9 rests on very few samples", frames=args.frames)
    if args.backends == "available":
        names = [n for n in BACKENDS if _unavailable_reason(n) is None]
        skipped = {n: _unavailable_reason(n) for n in BACKENDS if n not in names}
    else:
        names = [n.strip() for n in args.backends.split(",") if n.strip()]
        unknown = [n for n in names if n not in BACKENDS]
        if unknown:
            log.error("unknown backends", unknown=unknown, known=list(BACKENDS))
            return 2
        skipped = {}

    workdir = Path(tempfile.mkdtemp(prefix="actionloop-bench-"))
    loaded: dict[str, Any] = {}
    try:
        if args.bundle is None:
            log.info(
                "no --bundle: exporting the default model with UNTRAINED weights for timing only",
                frame_shape=list(DEFAULT_FRAME_SHAPE), dtype="uint16", window=DEFAULT_WINDOW,
            )
            bundle_path, default_note = _default_bundle(workdir), (
                f"no bundle given: default model, untrained weights, {DEFAULT_FRAME_SHAPE[0]}x{DEFAULT_FRAME_SHAPE[1]} "
                f"uint16, window {DEFAULT_WINDOW}"
            )
        else:
            bundle_path, default_note = args.bundle, None
        try:
            bundle = load_bundle(bundle_path)
        except BundleError as exc:
            log.error("bad bundle", error=str(exc))
            return 1
        frames = synthetic_frames(bundle, 64, seed=0)
        results: dict[str, Any] = {}
        parities: dict[str, dict[str, float]] = {}
        n_modes = len(MODES) - (bundle.adaptation is None)  # online centring only where the bundle has it
        total = len(names) * n_modes * args.frames
        with tqdm(total=total, desc="bench", unit="frame", disable=args.no_progress) as progress:
            for name in names:
                options: dict[str, Any] = {"threads": args.threads} if name in ("onnxruntime", "torch") else {}
                try:
                    backend = create_backend(name, bundle, **options)
                except BackendError as exc:
                    skipped[name] = str(exc)
                    progress.update(n_modes * args.frames)
                    continue
                loaded[name] = backend
                results[name] = bench_backend(backend, frames, args.frames, args.warmup, args.block, progress)
            parities = parity(loaded, frames)
    finally:
        for backend in loaded.values():
            backend.close()
        shutil.rmtree(workdir, ignore_errors=True)

    if not results:
        log.error("no backend could run", skipped=skipped)
        return 1
    m = bundle.manifest
    report: dict[str, Any] = {
        name: {k: v for k, v in r.items() if not k.startswith("_")} for name, r in results.items()
    }
    report["model"] = {
        "model_id": m.model_id,
        "model_name": m.model_name,
        "window": m.window,
        "input_shape": list(m.frame_shape),
        "input_dtype": m.frame_dtype,
        "feature_dim": m.feature_dim,
        "embedding_dim": m.embedding_dim,
        "classes": m.num_classes,
        "bundle": str(args.bundle) if args.bundle else None,
        "note": default_note,
    }
    for name, diffs in parities.items():
        report[name]["max_abs_diff_vs_torch"] = diffs
    report["machine"] = _machine()
    if load_at_start is not None:  # a shared machine inflates tails: say how busy it was
        report["machine"]["load_average_1m_at_start"] = load_at_start
        report["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    # top level holds only backends, "model" and "machine" (the shape); how it was
    # measured and what could not run here go with the machine
    report["machine"]["measurement"] = {
        "timed_frames_per_mode": args.frames,
        "warmup_frames_per_mode": args.warmup,
        "interleaved_block": args.block,
        "threads": args.threads,
        "timer": "time.perf_counter_ns around one call (wall); time.thread_time_ns (cpu_time); gc paused inside blocks",
        "streaming": "StreamingDecoder.push(frame): encode one frame + temporal part over the ring buffer",
        "whole_window": "backend.infer_whole_window(last W frames) per frame (no copy to assemble the window)",
        "streaming_online_centring": "OnlineCentredDecoder(StreamingDecoder).push(frame), bundles with adaptation.json",
    }
    report["machine"]["skipped_backends"] = skipped
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.out)
    png = args.out.with_suffix(".png")
    title = f"{m.model_name} {m.frame_shape[0]}x{m.frame_shape[1]} {m.frame_dtype}, window {m.window}" + (
        " (untrained)" if default_note else ""
    )
    _plot(results, png, title)
    print(_table(results))
    for name, diffs in parities.items():
        print(f"parity {name} vs torch (max abs diff): " + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()))
    if default_note:
        print(f"note: {default_note}")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    print(f"wrote {args.out} and {png}")
    return 0
