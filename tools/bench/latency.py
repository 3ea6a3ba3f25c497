"""`actionloop replay-bench`: the whole latency benchmark, side by side with its floors.

One run, on one machine, so that a noisy machine still gives honest ratios. Every replay uses
the same harness (tools/bench/replay.py: frames preloaded in RAM, a receiver thread that only
receives and stamps, an absolute-deadline pacer):

1. data: the simulator's held-out animal (256 x 256 uint16 at 30 frames/s), or `--data`;
2. model: the default model (`neural_conv`), trained briefly on other simulated animals and
   exported, or `--bundle`; cached under `--work-dir` so a second run starts at once
   (tools/bench/inputs.py);
3. bare floor: the same frames through a bare pyzmq echo process (no protocol codec);
4. transport floor: the same frames through the protocol echo (decodes each frame message and
   encodes an action, as the daemon must; tools/bench/echo.py);
5. inference floor: the backend alone on the same frames, in this process (tools/bench/inference.py);
6. the daemon: the REAL daemon process (`python -m decoder`) on TCP loopback at 30 frames/s;
7. a naive baseline: the same daemon with whole-window PyTorch inference per frame;
8. throughput: rates raised step by step until the daemon skips (tools/bench/ramp.py);
9. overload: the same daemon at 2x, 10x and 100x the rate it sustained (tools/bench/overload.py):
   the fraction of actions that carry a class and the age of the decided frame.

Writes `--out` (bench/latency.json), a `.md` table and a `.png` next to it, and
`*-details.json` with everything else measured (per-step ramp results, pacing, logs).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from tools.bench.frames import ReplayData, chain, load_replay_data
from tools.bench.inputs import prepare_bundle, prepare_heldout
from tools.bench.overload import FACTORS, run_overload
from tools.bench.pacing import RateSpec
from tools.bench.processes import (
    BenchError,
    ManagedProcess,
    loopback_endpoints,
    start_daemon,
    start_echo,
    use_realtime_scheduling,
)
from tools.bench.ramp import cycled, explain_ramp, find_sustained_rate, ramp_rates
from tools.bench.replay import ReplayOptions, replay
from tools.bench.report import (
    LatencyReport,
    LatencyStats,
    ReplayLog,
    build_report,
    format_latency_table,
    latency_breakdown,
    latency_stats_us,
    plot_latency,
    write_json_atomic,
)
from tools.bench.results import _json_safe, assemble_result, format_markdown, load_average, machine_info, target_checks

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class BenchSettings:
    out: Path = Path("bench/latency.json")
    work_dir: Path = Path("bench/work")
    data: Path | None = None
    bundle: Path | None = None
    frames: int = 5000
    floor_frames: int | None = None  # each echo floor and the inference floor; None: as many as `frames`
    naive_frames: int = 1000
    paced_frames: int = 600  # inference alone paced at `rate_fps`, beside the floor (a diagnosis)
    rate_fps: float = 30.0
    frame_shape: tuple[int, int] = (256, 256)
    backend: str = "onnxruntime"
    threads: int = 1
    seed: int = 0
    train_steps: int = 20
    train_batch: int = 64
    ramp: bool = True
    ramp_step_s: float = 3.0
    ramp_min_frames: int = 300
    ramp_max_fps: float = 8000.0
    ramp_refine: int = 2
    naive: bool = True
    overload: bool = True
    overload_factors: tuple[float, ...] = FACTORS
    overload_step_s: float = 2.0
    overload_base_fps: float | None = None  # None: the ramp's sustained rate
    realtime_priority: int | None = None  # SCHED_FIFO priority for every measured process
    progress: bool = True
    command: str = ""


@dataclass
class RunResult:
    """One replay through one process."""

    name: str
    report: LatencyReport
    rate: str
    achieved_fps: float
    pacing_late_p99_us: float | None
    seconds: float
    daemon_status: dict[str, Any] | None = None  # the daemon's own status after the run
    daemon_counters: dict[str, int] | None = None  # its counters' change over the run
    breakdown: dict[str, LatencyStats] = dataclasses.field(default_factory=dict)  # hop by hop
    send_bursts: int = 0  # frames the replay sent less than half a frame interval after the previous one
    log: ReplayLog | None = dataclasses.field(default=None, repr=False)  # the raw stamps


def daemon_status(control_endpoint: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The daemon's status report over its control socket (counters, backend, mode, ...)."""
    from protocols.client import ControlClient

    with ControlClient(control_endpoint) as client:
        return dict(client.request("status", timeout=timeout_s).data)


def _status_when_ready(process: ManagedProcess, control_endpoint: str, timeout_s: float) -> dict[str, Any]:
    """Ask for status until the daemon answers (it loads and warms up its model first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        process.check_alive()
        try:
            return daemon_status(control_endpoint, timeout_s=2.0)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise BenchError(f"{process.name} did not answer on {control_endpoint} within {timeout_s:g} s:\n"
                                 f"{process.log_tail()}") from None


def replay_through(process: ManagedProcess, name: str, data: ReplayData, endpoints: Mapping[str, str],
                   rate: RateSpec, *, start_seq: int = 0, progress: bool = True,
                   connect_timeout_s: float = 120.0, control: bool = False,
                   save_to: Path | None = None) -> RunResult:
    """Replay `data` into a running process; its death at any point is an error with its log.

    With `control` (a daemon), the frames it skipped are taken from its own counters before and
    after the run (exact, including a skip of the very last frame), not from the actions alone.
    """
    process.check_alive()
    options = ReplayOptions(frames_endpoint=endpoints["frames"], actions_endpoint=endpoints["actions"], rate=rate,
                            start_seq=start_seq, connect_timeout_s=connect_timeout_s, progress=progress,
                            session=f"bench-{name}")
    started = time.monotonic()
    try:
        before = _status_when_ready(process, endpoints["control"], connect_timeout_s) if control else None
        result = replay(data, options)
        after = daemon_status(endpoints["control"]) if control else None
    except Exception as exc:
        process.check_alive()
        raise BenchError(f"replay into {process.name} failed: {exc}\n{process.log_tail()}") from exc
    process.check_alive()
    seconds = time.monotonic() - started
    counters: dict[str, int] | None = None
    if before is not None and after is not None:
        counters = {k: int(after["counters"][k]) - int(before["counters"].get(k, 0)) for k in after["counters"]}
        result = dataclasses.replace(result, daemon_skipped=counters.get("frames_skipped", 0))
    report = build_report(result)
    if save_to is not None:  # the raw per-frame stamps, for looking into any outlier afterwards
        save_to.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(save_to, **{f.name: getattr(result, f.name) for f in dataclasses.fields(result)
                                        if isinstance(getattr(result, f.name), np.ndarray)})
    span_s = (int(result.sent_ns[-1]) - int(result.sent_ns[0])) / 1e9 if len(result.sent_ns) > 1 else 0.0
    achieved = (len(result.sent_ns) - 1) / span_s if span_s > 0 else math.inf
    late = result.pacing_late_ns
    late_p99 = float(np.percentile(late, 99) / 1e3) if late is not None and len(late) else None
    gaps = np.diff(result.sent_ns)
    bursts = int(np.count_nonzero(gaps < 0.5 * np.median(gaps))) if len(gaps) > 1 else 0
    return RunResult(name, report, str(rate), achieved, late_p99, seconds, after, counters,
                     latency_breakdown(result), bursts, result)


INFERENCE_POOL_FRAMES = 512  # distinct recorded frames held in memory for the inference floor

def measure_inference_floor(bundle_path: Path, data: ReplayData, n_frames: int, backend_name: str, threads: int,
                            progress: bool = True, paced_fps: float | None = None,
                            paced_frames: int = 0) -> tuple[LatencyStats, np.ndarray, dict[str, Any]]:
    """The backend alone on the same frames: per-frame streaming cost (encode + temporal head).

    With `paced_fps`, also the same calls paced at that rate (`paced_frames` of them, sleeping
    between calls as a daemon does between frames): reported beside the floor, in `info`, to
    show what the model costs on a core that wakes up for each frame.

    Uses the inference benchmark's own timing loop (tools/bench_inference.py: warm-up, interleaved
    blocks with whole-window inference, garbage collector paused inside blocks) in this process,
    with nothing else around it: no sockets, no event loop, no threads. The first recorded frames
    of the replay (up to INFERENCE_POOL_FRAMES, cycled) are the input.
    """
    from tqdm import tqdm

    from decoder.backends import create_backend
    from protocols.bundle import load_bundle
    from tools.bench.inference import bench_backend, paced_streaming

    bundle = load_bundle(bundle_path)
    pool = np.stack([data.frame(i) for i in range(min(len(data), INFERENCE_POOL_FRAMES))])
    backend = create_backend(backend_name, bundle, threads=threads)
    try:
        backend.warm_up(50)
        with tqdm(total=4 * n_frames, desc="inference floor", unit="call", disable=not progress,
                  mininterval=0.5) as bar:
            result = bench_backend(backend, pool, n_frames, warmup=200, block=50, progress=bar)
        paced = (paced_streaming(backend, pool, paced_frames, 1.0 / paced_fps)
                 if paced_fps is not None and paced_frames > 0 else None)
    finally:
        backend.close()
    samples = result.pop("_samples_ns")
    info = {k: v for k, v in result.items() if k != "describe"}
    info["describe"] = result.get("describe", {})
    if paced is not None:
        info["paced"] = {"rate_fps": paced_fps, "frames": len(paced), **latency_stats_us(paced)}
    return latency_stats_us(samples["streaming"]), samples["streaming"] / 1e3, info


def run_benchmark(settings: BenchSettings) -> dict[str, Any]:
    """Everything, in order; returns the latency.json payload (also written to disk)."""
    started = time.monotonic()
    load_before = load_average()
    work = settings.work_dir
    work.mkdir(parents=True, exist_ok=True)
    runs_dir = work / "runs"

    # Inputs.
    data_path = settings.data or prepare_heldout(settings)
    datasets = load_replay_data(data_path)
    data = chain(datasets)
    if len(data) < settings.frames:
        log.warning("the recording is shorter than --frames; replaying all of it", frames=len(data),
                    requested=settings.frames)
    # Every frame any run sends is in RAM before the first clock starts (one copy, shared).
    main_data = data.limited(settings.frames).preloaded()
    floor_data = main_data.limited(settings.floor_frames or settings.frames)
    if settings.bundle is not None:
        bundle_path, model_info = settings.bundle, {"how": f"given bundle {settings.bundle}"}
    else:
        bundle_path, model_info = prepare_bundle(settings)
    from protocols.bundle import load_bundle

    bundle = load_bundle(bundle_path)
    frame = main_data.frame(0)
    if tuple(frame.shape) != tuple(bundle.frame_shape) or str(frame.dtype) != bundle.frame_dtype:
        raise BenchError(f"the recording's frames are {frame.dtype} {frame.shape} but the model takes "
                         f"{bundle.frame_dtype} {tuple(bundle.frame_shape)}")
    model_info.update(model_id=bundle.model_id, window=bundle.window, frame_shape=list(bundle.frame_shape))
    rate = RateSpec("fps", settings.rate_fps)
    progress = settings.progress
    details: dict[str, Any] = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
                               "frame": f"{frame.shape[0]} x {frame.shape[1]} {frame.dtype}", "model": model_info,
                               "data": str(data_path), "load_before": load_before}

    # 1. Floors: the same frames through the bare pyzmq echo, then through the protocol echo.
    rt = settings.realtime_priority
    if rt is not None:  # after the inputs are ready: simulation and training stay at normal priority
        use_realtime_scheduling(rt)
    endpoints = loopback_endpoints()
    with start_echo(endpoints, runs_dir / "bare-echo.log", rt, bare=True) as bare_echo:
        bare = replay_through(bare_echo, "bare echo", floor_data, endpoints, rate, progress=progress,
                              save_to=runs_dir / "bare-echo.npz")
    log.info("bare floor", **_rounded(bare.report.end_to_end))
    endpoints = loopback_endpoints()
    with start_echo(endpoints, runs_dir / "echo.log", rt) as echo:
        transport = replay_through(echo, "echo", floor_data, endpoints, rate, progress=progress,
                                   save_to=runs_dir / "echo.npz")
    log.info("transport floor", **_rounded(transport.report.end_to_end))

    # 2. Inference floor: the backend alone on the same frames.
    inference_stats, inference_us, inference_info = measure_inference_floor(
        bundle_path, floor_data, len(floor_data), settings.backend, settings.threads, progress,
        paced_fps=settings.rate_fps, paced_frames=settings.paced_frames)
    log.info("inference floor", **_rounded(inference_stats))
    if "paced" in inference_info:
        log.info("inference alone at the replay rate", **_rounded(inference_info["paced"]))
    details["inference"] = _json_safe(inference_info)

    # 3. The daemon, then the throughput ramp and the overload steps on the same process.
    endpoints = loopback_endpoints()
    overload: dict[str, Any] | None = None
    ramp_steps: list[dict[str, Any]] = []
    sustained: float | None = None
    with start_daemon(bundle_path, endpoints, settings.backend, "streaming", settings.threads,
                      runs_dir / "daemon", rt) as daemon:
        main = replay_through(daemon, "daemon", main_data, endpoints, rate, progress=progress, control=True,
                              save_to=runs_dir / "daemon.npz")
        _check_daemon_runs(main, settings.backend, "streaming")
        log.info("daemon", **_rounded(main.report.end_to_end), skipped=main.report.frames.skipped)
        if settings.ramp:
            next_seq = [int(main_data.seq[-1]) + 10_000]  # type: ignore[index]

            def run_at(fps: float) -> tuple[bool, dict[str, Any]]:
                n = max(settings.ramp_min_frames, int(round(fps * settings.ramp_step_s)))
                step = replay_through(daemon, f"ramp-{fps:g}", cycled(main_data, n), endpoints,
                                      RateSpec("fps", fps), start_seq=next_seq[0], progress=False, control=True)
                next_seq[0] += n + 10_000
                f = step.report.frames
                kept_pace = step.achieved_fps >= 0.95 * fps
                ok = f.skipped == 0 and f.lost == 0 and kept_pace
                infer = (step.daemon_status or {}).get("latency_us", {})
                record = {"frames": f.as_dict(), "achieved_fps": round(step.achieved_fps, 1),
                          "publisher_kept_pace": kept_pace, "publisher_late_p99_us": step.pacing_late_p99_us,
                          "publisher_bursts": step.send_bursts,
                          "end_to_end_p50_us": step.report.end_to_end["p50_us"],
                          "end_to_end_p99_us": step.report.end_to_end["p99_us"],
                          "daemon_p50_us": step.report.daemon["p50_us"],
                          "daemon_p99_us": step.report.daemon["p99_us"],
                          "daemon_max_us": step.report.daemon["max_us"],
                          "daemon_infer_p50_us": infer.get("infer_p50_us"),
                          "daemon_infer_p99_us": infer.get("infer_p99_us")}
                log.info("ramp step", rate_fps=fps, ok=ok, skipped=f.skipped, lost=f.lost,
                         achieved_fps=record["achieved_fps"])
                return ok, record

            sustained, ramp_steps = find_sustained_rate(
                run_at, ramp_rates(settings.rate_fps, settings.ramp_max_fps), settings.ramp_refine)
            details["ramp_note"] = explain_ramp(ramp_steps, sustained, settings.ramp_max_fps)
        if settings.overload:
            overload = _overload(settings, daemon, main_data, endpoints, sustained,
                                 int(main_data.seq[-1]) + 10**9)  # type: ignore[index]
    details["daemon_exit_code"] = daemon.returncode
    details["ramp"] = ramp_steps

    # 4. Naive baseline: whole-window PyTorch per frame, in the same daemon.
    naive_stats: LatencyStats | None = None
    naive_us = np.empty(0)
    if settings.naive:
        endpoints = loopback_endpoints()
        with start_daemon(bundle_path, endpoints, "torch", "whole_window", settings.threads,
                          runs_dir / "naive", rt) as naive_daemon:
            naive = replay_through(naive_daemon, "naive", main_data.limited(settings.naive_frames), endpoints,
                                   rate, progress=progress, control=True, save_to=runs_dir / "naive.npz")
            _check_daemon_runs(naive, "torch", "whole_window")
        naive_stats, naive_us = naive.report.end_to_end, naive.report.end_to_end_us
        log.info("naive baseline", **_rounded(naive_stats), skipped=naive.report.frames.skipped)

    for d in datasets:
        d.close()
    machine = machine_info()
    details["load_after"] = load_average()
    # The load average tells a reader whether other work shared the CPUs during the run.
    machine["scheduling"] = "SCHED_OTHER (default)" if rt is None else f"SCHED_FIFO priority {rt}"
    machine["load_average_before"] = load_before
    machine["load_average_after"] = details["load_after"]
    result = assemble_result(daemon=main.report, bare=bare.report.end_to_end, transport=transport.report.end_to_end,
                             inference=inference_stats,
                             naive=naive_stats, sustained_fps=sustained, backend=settings.backend, machine=machine,
                             overload=overload)
    details["targets"] = target_checks(result, details.get("ramp_note"))
    details["runs"] = {
        run.name: {"rate": run.rate, "achieved_fps": round(run.achieved_fps, 2), "seconds": round(run.seconds, 1),
                   "pacing_late_p99_us": run.pacing_late_p99_us, "report": run.report.as_dict(),
                   "breakdown": run.breakdown, "daemon_counters": run.daemon_counters}
        for run in (bare, transport, main, *([naive] if settings.naive else []))
    }
    details["seconds"] = round(time.monotonic() - started, 1)

    out = settings.out
    write_json_atomic(out, result)
    write_json_atomic(out.with_name(out.stem + "-details.json"), _json_safe(details))
    md_path = out.with_suffix(".md")
    tmp = md_path.with_name(f".{md_path.name}.tmp")
    tmp.write_text(format_markdown(result, details))
    os.replace(tmp, md_path)
    series = {"bare floor (pyzmq echo)": bare.report.end_to_end_us,
              "transport floor (protocol echo)": transport.report.end_to_end_us, "inference floor": inference_us,
              "daemon share": main.report.daemon_us, "daemon end-to-end": main.report.end_to_end_us}
    if len(naive_us):
        series["naive baseline end-to-end"] = naive_us
    plot_latency(series, out.with_suffix(".png"),
                 title=f"{details['frame']} at {settings.rate_fps:g} frames/s, backend {settings.backend}")
    return result


def _overload(settings: BenchSettings, daemon: ManagedProcess, data: ReplayData, endpoints: Mapping[str, str],
              sustained: float | None, first_seq: int) -> dict[str, Any] | None:
    """The overload steps at `overload_factors` x the sustained rate (the ramp's, unless given)."""
    if settings.overload_base_fps is not None:
        base, how = settings.overload_base_fps, "given with --overload-base-fps"
    elif sustained is not None:
        base, how = sustained, "found by the ramp in this run"
    else:
        log.warning("overload steps skipped: no sustained rate (run the ramp or give --overload-base-fps)")
        return None
    next_seq = [first_seq]

    def replay_at(rate: float, n: int) -> tuple[ReplayLog, dict[str, Any]]:
        step = replay_through(daemon, f"overload-{rate:g}", cycled(data, n), endpoints, RateSpec("fps", rate),
                              start_seq=next_seq[0], progress=False, control=True)
        next_seq[0] += n + 10_000
        assert step.log is not None
        counters = step.daemon_counters or {}
        own = (step.daemon_status or {}).get("latency_us", {})
        # Lost: sent, neither decoded nor skipped by the daemon (its counter of sequence holes
        # would also count the jump between steps).
        f = step.report.frames
        numbers = {"skipped": f.skipped, "lost": f.lost,
                   "window_resets": counters.get("window_resets"), "daemon_age_p99_us": own.get("age_p99_us"),
                   "daemon_p99_us": own.get("p99_us"), "publisher_late_p99_us": step.pacing_late_p99_us}
        log.info("overload step", rate_fps=rate, frames=n, achieved_fps=round(step.achieved_fps, 1),
                 skipped=numbers["skipped"], lost=numbers["lost"])
        return step.log, numbers

    steps = run_overload(replay_at, base, settings.overload_factors, settings.overload_step_s)
    return {"base_fps": base, "base_how": how, "step_s": settings.overload_step_s, "steps": steps}


def _check_daemon_runs(run: RunResult, backend: str, mode: str) -> None:
    """The daemon must have served with the backend and mode asked for (no silent fallback)."""
    status = run.daemon_status or {}
    got = (status.get("backend"), status.get("mode"))
    if backend != "auto" and got != (backend, mode):
        raise BenchError(f"{run.name}: the daemon ran backend/mode {got}, not {(backend, mode)}")


def _rounded(stats: Mapping[str, float | None]) -> dict[str, float | None]:
    return {k: (None if v is None else round(v, 1)) for k, v in stats.items()}


def configure(parser: argparse.ArgumentParser) -> None:
    d = BenchSettings()
    parser.add_argument("--out", type=Path, default=d.out, help="latency JSON to write (.md, .png next to it)")
    parser.add_argument("--work-dir", type=Path, default=d.work_dir,
                        help="simulated data, the trained model and process logs (reused by later runs)")
    parser.add_argument("--data", type=Path, default=None,
                        help="replay this trial or dataset directory instead of the simulated held-out animal")
    parser.add_argument("--bundle", type=Path, default=None, help="use this model bundle instead of training one")
    parser.add_argument("--frames", type=int, default=d.frames, help="frames replayed into the daemon (>= 5000 for the targets)")
    parser.add_argument("--floor-frames", type=int, default=None, help="frames for the echo and inference floors (default: --frames)")
    parser.add_argument("--naive-frames", type=int, default=d.naive_frames, help="frames for the naive baseline")
    parser.add_argument("--rate", type=float, default=d.rate_fps, help="frames per second of the main replay")
    parser.add_argument("--backend", default=d.backend, help="the daemon's backend (onnxruntime, tensorrt, torch, auto)")
    parser.add_argument("--threads", type=int, default=d.threads, help="the backend's intra-op threads")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--train-steps", type=int, default=d.train_steps, help="training steps of the benchmark's model")
    parser.add_argument("--ramp-step-seconds", type=float, default=d.ramp_step_s, help="duration of each throughput step")
    parser.add_argument("--ramp-max-fps", type=float, default=d.ramp_max_fps, help="highest rate the ramp tries")
    parser.add_argument("--no-ramp", action="store_true", help="skip the throughput ramp")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument("--no-overload", action="store_true", help="skip the overload steps")
    parser.add_argument("--overload-base-fps", type=float, default=None,
                        help="the sustained rate the overload factors multiply (default: the ramp's)")
    parser.add_argument("--overload-factors", default=",".join(f"{f:g}" for f in d.overload_factors),
                        help="comma-separated multiples of the sustained rate (default 2,10,100)")
    parser.add_argument("--overload-step-seconds", type=float, default=d.overload_step_s,
                        help="duration of each overload step")
    parser.add_argument("--realtime", type=int, default=None, metavar="PRIORITY",
                        help="run the daemon, the echo and the replay with SCHED_FIFO at this priority (1-99), "
                             "as deploy/ suggests for a tuned rig; needs CAP_SYS_NICE")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    for name in ("frames", "naive_frames", "threads", "train_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.floor_frames is not None and args.floor_frames < 1:
        raise ValueError("--floor-frames must be >= 1")
    if not args.rate > 0 or not args.ramp_max_fps > 0 or not args.ramp_step_seconds > 0:
        raise ValueError("--rate, --ramp-max-fps and --ramp-step-seconds must be > 0")
    if args.realtime is not None and not 1 <= args.realtime <= 99:
        raise ValueError("--realtime must be a priority between 1 and 99")
    try:
        factors = tuple(float(f) for f in str(args.overload_factors).split(","))
    except ValueError:
        raise ValueError("--overload-factors must be numbers separated by commas, e.g. 2,10,100") from None
    if not all(f > 0 for f in factors) or not args.overload_step_seconds > 0:
        raise ValueError("--overload-factors and --overload-step-seconds must be > 0")
    if args.overload_base_fps is not None and not args.overload_base_fps > 0:
        raise ValueError("--overload-base-fps must be > 0")
    for name in ("data", "bundle"):
        path = getattr(args, name)
        if path is not None and not path.exists():
            raise ValueError(f"--{name} {path} does not exist")
    return BenchSettings(
        out=args.out, work_dir=args.work_dir, data=args.data, bundle=args.bundle, frames=args.frames,
        floor_frames=args.floor_frames, naive_frames=args.naive_frames, rate_fps=args.rate, backend=args.backend,
        threads=args.threads, seed=args.seed, train_steps=args.train_steps, ramp=not args.no_ramp,
        ramp_step_s=args.ramp_step_seconds, ramp_max_fps=args.ramp_max_fps, naive=not args.no_naive,
        overload=not args.no_overload, overload_factors=factors, overload_step_s=args.overload_step_seconds,
        overload_base_fps=args.overload_base_fps,
        realtime_priority=args.realtime,
        progress=not args.no_progress, command=_command_line(),
    )


def _command_line() -> str:
    argv = list(sys.argv)
    if Path(argv[0]).name in ("actionloop", "cli.py"):
        argv[0] = "actionloop"
    return shlex.join(argv)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        log.error("bad arguments", error=str(exc))
        return 2
    try:
        result = run_benchmark(settings)
    except BenchError as exc:
        log.error("benchmark failed", error=str(exc))
        return 1
    except KeyboardInterrupt:
        log.warning("benchmark interrupted; nothing written")
        return 130
    table = {"bare floor": result["bare_floor"], "transport floor": result["transport_floor"], "inference floor": result["inference_floor"],
             "daemon share": result["daemon"], "daemon end-to-end": result["end_to_end"],
             "naive baseline": result["naive_baseline"]}
    print(format_latency_table(table))
    print(f"overhead ratio p50 {result['overhead_ratio_p50']}, p99 {result['overhead_ratio_p99']}, sustained {result['sustained_fps']} frames/s, "
          f"frames {result['frames']}, accuracy {result['accuracy']}")
    print(f"wrote {settings.out}, {settings.out.with_suffix('.md')}, {settings.out.with_suffix('.png')}")
    return 0
