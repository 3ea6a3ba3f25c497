"""`actionloop replay-bench`: the whole latency benchmark, side by side with its floors.

One run, on one machine, so that a noisy machine still gives honest ratios:

1. data: the simulator's held-out animal (256 x 256 uint16 at 30 frames/s), or `--data`;
2. model: the default model (`neural_conv`), trained briefly on other simulated animals and
   exported, or `--bundle`; cached under `--work-dir` so a second run starts at once;
3. transport floor: the same frames replayed through a bare echo process (tools/echo_floor.py);
4. inference floor: the backend alone on the same frames, in this process (per-frame encode +
   temporal head, the work the daemon does per frame);
5. the daemon: the REAL daemon process (`python -m decoder`, settings through ACTIONLOOP_*
   environment variables) on TCP loopback, replayed at 30 frames/s;
6. a naive baseline: the same daemon with whole-window PyTorch inference per frame;
7. throughput: rates raised step by step until the daemon skips; the highest zero-skip rate.

Writes `--out` (bench/latency.json, in the issue's shape), a `.md` table and a `.png` next to
it, and `*-details.json` with everything else measured (per-step ramp results, pacing, logs).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from tools.latency_report import (
    STAT_KEYS,
    LatencyReport,
    LatencyStats,
    build_report,
    format_latency_table,
    latency_breakdown,
    latency_stats_us,
    plot_latency,
    write_json_atomic,
)
from tools.replay import RateSpec, ReplayData, ReplayOptions, chain, load_replay_data, replay

log = structlog.get_logger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
HELDOUT_ANIMAL_INDEX = 7  # the simulator's bench preset has 8 animals; the last one is held out
TRAIN_ANIMALS = 3

# The targets (benchmark figures, never asserted in tests).
TARGETS: dict[str, tuple[str, float, str]] = {
    "daemon_p99_us": ("daemon share p99", 2000.0, "<="),
    "end_to_end_p99_us": ("end-to-end p99", 3000.0, "<="),
    "skipped": ("skipped frames", 0.0, "<="),
    "overhead_ratio": ("overhead ratio", 1.3, "<="),
    "sustained_fps": ("sustained zero-skip rate (fps)", 300.0, ">="),
}


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says which step failed and why."""


@dataclass(frozen=True)
class BenchSettings:
    out: Path = Path("bench/latency.json")
    work_dir: Path = Path("bench/work")
    data: Path | None = None
    bundle: Path | None = None
    frames: int = 5000
    floor_frames: int | None = None  # echo and inference floor; None: as many as `frames`
    naive_frames: int = 1000
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
    ramp_max_fps: float = 2000.0
    ramp_refine: int = 2
    naive: bool = True
    realtime_priority: int | None = None  # SCHED_FIFO priority for every measured process
    progress: bool = True
    command: str = ""


# --- small utilities ------------------------------------------------------------------------


def free_tcp_port() -> int:
    """A port free on loopback right now (the OS picks it; a tiny race before use is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loopback_endpoints() -> dict[str, str]:
    return {name: f"tcp://127.0.0.1:{free_tcp_port()}" for name in ("frames", "actions", "control")}


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (the README quotes CPU count and backend next to them)."""
    cpu_model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    for module in ("onnxruntime", "torch", "zmq", "numpy"):
        with contextlib.suppress(Exception):
            info[f"{module}_version"] = __import__(module).__version__
    return info


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


# --- processes: the daemon and the echo ------------------------------------------------------


class ManagedProcess:
    """A child process with its output in a log file; stopped with SIGTERM, killed if it hangs."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path,
                 realtime_priority: int | None = None) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = log_path.open("w")
        preexec = None
        if realtime_priority is not None:
            param = os.sched_param(realtime_priority)
            preexec = lambda: os.sched_setscheduler(0, os.SCHED_FIFO, param)  # noqa: E731  (inherited by its threads)
        self.proc = subprocess.Popen(
            list(argv), cwd=REPO_ROOT, env=dict(env), stdout=self._log_file, stderr=subprocess.STDOUT,
            preexec_fn=preexec,
        )
        self.returncode: int | None = None

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise BenchError(f"{self.name} exited with code {code} during the benchmark:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        self._log_file.flush()
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("process did not stop on SIGTERM; killing it", name=self.name)
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        self._log_file.close()
        return int(self.returncode)

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _child_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONLOOP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def start_echo(endpoints: Mapping[str, str], log_path: Path, realtime_priority: int | None = None) -> ManagedProcess:
    argv = [sys.executable, "-m", "tools.echo_floor", "--frames-endpoint", endpoints["frames"],
            "--actions-endpoint", endpoints["actions"]]
    return ManagedProcess("echo", argv, _child_env({}), log_path, realtime_priority)


def daemon_env(bundle: Path, endpoints: Mapping[str, str], backend: str, mode: str, threads: int,
               decision_log: Path) -> dict[str, str]:
    """The daemon's settings for one run, as ACTIONLOOP_* environment variables."""
    return {
        "ACTIONLOOP_MODEL__BUNDLE": str(bundle),
        "ACTIONLOOP_SOCKETS__FRAMES": endpoints["frames"],
        "ACTIONLOOP_SOCKETS__FRAMES_MODE": "connect",
        "ACTIONLOOP_SOCKETS__ACTIONS": endpoints["actions"],
        "ACTIONLOOP_SOCKETS__CONTROL": endpoints["control"],
        "ACTIONLOOP_BACKEND__NAME": backend,
        "ACTIONLOOP_BACKEND__MODE": mode,
        "ACTIONLOOP_BACKEND__THREADS": str(threads),
        "ACTIONLOOP_DECISION_LOG__PATH": str(decision_log),
        "ACTIONLOOP_LOGGING__FORMAT": "json",
    }


def start_daemon(bundle: Path, endpoints: Mapping[str, str], backend: str, mode: str, threads: int,
                 run_dir: Path, realtime_priority: int | None = None) -> ManagedProcess:
    env = _child_env(daemon_env(bundle, endpoints, backend, mode, threads, run_dir / "decisions.msgpack"))
    return ManagedProcess(f"daemon ({backend}, {mode})", [sys.executable, "-m", "decoder"], env,
                          run_dir / "daemon.log", realtime_priority)


def use_realtime_scheduling(priority: int) -> None:
    """SCHED_FIFO for this process's current thread; threads started later inherit it."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError) as exc:
        raise BenchError(f"cannot use real-time priority {priority} (SCHED_FIFO): {exc}; run as a user with "
                         "CAP_SYS_NICE or an RLIMIT_RTPRIO >= the priority, or leave --realtime out") from None


# --- measuring ------------------------------------------------------------------------------


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
    return RunResult(name, report, str(rate), achieved, late_p99, seconds, after, counters,
                     latency_breakdown(result))


INFERENCE_POOL_FRAMES = 512  # distinct recorded frames held in memory for the inference floor


def measure_inference_floor(bundle_path: Path, data: ReplayData, n_frames: int, backend_name: str, threads: int,
                            progress: bool = True) -> tuple[LatencyStats, np.ndarray, dict[str, Any]]:
    """The backend alone on the same frames: per-frame streaming cost (encode + temporal head).

    Uses the inference benchmark's own timing loop (tools/bench_inference.py: warm-up, interleaved
    blocks with whole-window inference, garbage collector paused inside blocks) in this process,
    with nothing else around it: no sockets, no event loop, no threads. The first recorded frames
    of the replay (up to INFERENCE_POOL_FRAMES, cycled) are the input.
    """
    from tqdm import tqdm

    from decoder.backends import create_backend
    from protocols.bundle import load_bundle
    from tools.bench_inference import bench_backend

    bundle = load_bundle(bundle_path)
    pool = np.stack([data.frame(i) for i in range(min(len(data), INFERENCE_POOL_FRAMES))])
    backend = create_backend(backend_name, bundle, threads=threads)
    try:
        backend.warm_up(50)
        with tqdm(total=4 * n_frames, desc="inference floor", unit="call", disable=not progress,
                  mininterval=0.5) as bar:
            result = bench_backend(backend, pool, n_frames, warmup=200, block=50, progress=bar)
    finally:
        backend.close()
    samples = result.pop("_samples_ns")
    info = {k: v for k, v in result.items() if k != "describe"}
    info["describe"] = result.get("describe", {})
    return latency_stats_us(samples["streaming"]), samples["streaming"] / 1e3, info


def find_sustained_rate(run_at: Callable[[float], tuple[bool, dict[str, Any]]], rates: Sequence[float],
                        refine: int = 2) -> tuple[float | None, list[dict[str, Any]]]:
    """Walk up `rates` until a step fails, then bisect `refine` times between the last rate that
    passed and the first that failed. Returns the highest passing rate (None if none) and every
    step's record. A step passes when `run_at(rate)` says so (zero skipped, zero lost)."""
    steps: list[dict[str, Any]] = []
    best: float | None = None
    failed: float | None = None
    for rate in rates:
        ok, record = run_at(rate)
        steps.append({"rate_fps": rate, "ok": ok, **record})
        if not ok:
            failed = rate
            break
        best = rate
    if failed is not None and best is not None:
        lo, hi = best, failed
        for _ in range(refine):
            mid = round((lo + hi) / 2)
            if mid <= lo or mid >= hi:
                break
            ok, record = run_at(mid)
            steps.append({"rate_fps": float(mid), "ok": ok, **record})
            if ok:
                lo = best = float(mid)
            else:
                hi = float(mid)
    return best, steps


def ramp_rates(start_fps: float, max_fps: float, must_include: Sequence[float] = (300.0,)) -> list[float]:
    """The base rate, then doubling rates up to `max_fps`, plus the target rates on the way."""
    rates: set[float] = set()
    rate = start_fps
    while rate <= max_fps:
        rates.add(float(rate))
        rate *= 2
    rates.update(float(r) for r in must_include if start_fps < r <= max_fps)
    return sorted(rates)


class _Cycled:
    """Frames of `data` repeated to any length (the throughput ramp needs more than a trial)."""

    def __init__(self, data: ReplayData, n: int) -> None:
        self._data, self._n = data, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._data.frames[i % len(self._data)]


def cycled(data: ReplayData, n: int) -> ReplayData:
    return ReplayData(frames=_Cycled(data, n), times_s=np.arange(n, dtype=np.float64), name=data.name,
                      _owners=[])


# --- data and model ------------------------------------------------------------------------


def simulate_animal(out_dir: Path, animal_index: int, n_trials: int, seconds: float, settings: BenchSettings,
                    first_trial: int = 0) -> Path:
    """Simulate trials `first_trial ..` (`n_trials` of them) of one animal of the bench preset
    (256 x 256 at 30 frames/s)."""
    from tqdm import tqdm

    from tools.simulator import get_preset, make_animals, simulate_trial
    from trainer.data.recording import write_trial
    from trainer.data.schema import ACTION_NAMES, JOINT_NAMES

    config = get_preset("bench").with_overrides(
        neural_rate_hz=settings.rate_fps, frame_shape=settings.frame_shape, trial_seconds=seconds,
    )
    _, animals = make_animals(config, settings.seed)
    animal = animals[animal_index]
    out_dir.mkdir(parents=True, exist_ok=True)
    for t in tqdm(range(first_trial, first_trial + n_trials), desc=f"simulate {animal.animal_id}", unit="trial",
                  disable=not settings.progress):
        path = out_dir / f"{animal.animal_id}_trial{t:02d}.h5"
        if path.exists():
            continue
        trial = simulate_trial(config, animal, t, settings.seed)
        write_trial(path, animal_id=trial.animal_id, trial_id=trial.trial_id, neural=trial.neural,
                    neural_times=trial.neural_times, pose=trial.pose, pose_times=trial.pose_times,
                    joint_names=JOINT_NAMES, labels=trial.labels, class_names=ACTION_NAMES,
                    neural_rate_hz=config.neural_rate_hz, pose_rate_hz=config.pose_rate_hz,
                    extra={"source": "simulator", "seed": settings.seed, "preset": "bench",
                           "purpose": "replay-bench"})
    return out_dir


def prepare_heldout(settings: BenchSettings) -> Path:
    """The held-out animal's trials, enough frames for the run (cached in the work directory)."""
    seconds = float(min(60, max(4, math.ceil(settings.frames / settings.rate_fps) + 2)))
    per_trial = int(seconds * settings.rate_fps) - 2  # the scanner clock starts a little late
    n_trials = max(1, math.ceil(settings.frames / per_trial))
    key = _key("heldout", settings.seed, settings.rate_fps, settings.frame_shape, n_trials, seconds)
    out = settings.work_dir / f"heldout-{key}"
    return simulate_animal(out, HELDOUT_ANIMAL_INDEX, n_trials, seconds, settings)


CALIBRATION_TRIAL = 1000  # the held-out animal's calibration trial: never one of the replayed ones


def prepare_bundle(settings: BenchSettings) -> tuple[Path, dict[str, Any]]:
    """The default model, trained briefly on other simulated animals and exported (cached) for
    the held-out animal, calibrated from 30 s of it that the benchmark does not replay."""
    from trainer.config import load_config
    from trainer.export import export_checkpoint
    from trainer.train import train

    key = _key("model", settings.seed, settings.rate_fps, settings.frame_shape, settings.train_steps,
               settings.train_batch, TRAIN_ANIMALS, "session-calibrated")
    root = settings.work_dir / f"model-{key}"
    bundle_dir = root / "bundle"
    info: dict[str, Any] = {
        "how": f"default model (neural_conv), trained by the benchmark for {settings.train_steps} steps of "
               f"{settings.train_batch} windows on {TRAIN_ANIMALS} simulated animals, not the held-out one, "
               "calibrated for the held-out animal from a trial that is not replayed",
    }
    if (bundle_dir / "manifest.json").exists():
        return bundle_dir, info
    train_dir = root / "train-data"
    for animal in range(TRAIN_ANIMALS):
        simulate_animal(train_dir, animal, 1, 30.0, settings)
    cfg = load_config(None, ["optim.epochs=1", f"optim.steps_per_epoch={settings.train_steps}",
                             f"optim.batch_size={settings.train_batch}", f"seed={settings.seed}",
                             f"progress={'true' if settings.progress else 'false'}"])
    result = train(cfg, train_dir, root / "run")
    calibration = simulate_animal(root / "calibration", HELDOUT_ANIMAL_INDEX, 1, 30.0, settings,
                                  first_trial=CALIBRATION_TRIAL)
    export_checkpoint(result.checkpoint, bundle_dir, overwrite=True, progress=False,
                      calibration_trials=sorted(calibration.glob("*.h5")))
    return bundle_dir, info


# --- results --------------------------------------------------------------------------------


def _stats_or_empty(stats: LatencyStats | None) -> dict[str, float | None]:
    """The five statistics in µs, rounded to 0.1 µs (None where not measured)."""
    out: dict[str, float | None] = {}
    for key in STAT_KEYS:
        value = None if stats is None else stats.get(key)
        out[key] = None if value is None else round(float(value), 1)
    return out


def overhead_ratio(daemon_e2e: LatencyStats, transport: LatencyStats, inference: LatencyStats) -> float | None:
    """daemon end-to-end p50 / (transport floor p50 + inference floor p50)."""
    parts = (daemon_e2e.get("p50_us"), transport.get("p50_us"), inference.get("p50_us"))
    if any(p is None for p in parts) or (parts[1] + parts[2]) <= 0:  # type: ignore[operator]
        return None
    return float(parts[0] / (parts[1] + parts[2]))  # type: ignore[operator]


def assemble_result(*, daemon: LatencyReport, transport: LatencyStats, inference: LatencyStats,
                    naive: LatencyStats | None, sustained_fps: float | None, backend: str,
                    machine: Mapping[str, Any]) -> dict[str, Any]:
    """bench/latency.json, exactly in the issue's shape."""
    ratio = overhead_ratio(daemon.end_to_end, transport, inference)
    return {
        "daemon": _stats_or_empty(daemon.daemon),
        "end_to_end": _stats_or_empty(daemon.end_to_end),
        "transport_floor": _stats_or_empty(transport),
        "inference_floor": _stats_or_empty(inference),
        "naive_baseline": _stats_or_empty(naive),
        "overhead_ratio": None if ratio is None else round(ratio, 3),
        "frames": daemon.frames.as_dict(),
        "sustained_fps": sustained_fps,
        "accuracy": None if daemon.accuracy is None else round(daemon.accuracy, 4),
        "backend": backend,
        "machine": dict(machine),
    }


def target_checks(result: Mapping[str, Any], ramp_note: str | None = None) -> list[dict[str, Any]]:
    """Each target with the measured value, met or not, and by how much it is missed."""
    values = {
        "daemon_p99_us": result["daemon"]["p99_us"],
        "end_to_end_p99_us": result["end_to_end"]["p99_us"],
        "skipped": result["frames"]["skipped"],
        "overhead_ratio": result["overhead_ratio"],
        "sustained_fps": result["sustained_fps"],
    }
    checks = []
    for key, (label, target, op) in TARGETS.items():
        value = values[key]
        met = value is not None and (value <= target if op == "<=" else value >= target)
        if value is None:
            miss = ramp_note if key == "sustained_fps" and ramp_note else "not measured"
        elif met:
            miss = ""
        elif target == 0:
            miss = f"{value:g} over"
        else:
            miss = f"{abs(value / target - 1) * 100:.0f} % {'over' if op == '<=' else 'under'}"
        checks.append({"key": key, "target": label, "goal": _format_measured(key, target, op), "measured": value,
                       "met": met, "missed_by": miss})
    return checks


def _format_measured(key: str, value: float | None, op: str = "") -> str:
    prefix = f"{op} " if op else ""
    if value is None:
        return "-"
    if key.endswith("_us"):
        return f"{prefix}{value / 1000:.2f} ms"
    if key == "overhead_ratio":
        return f"{prefix}{value:.2f}"
    return f"{prefix}{value:g}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v / 1000:.2f}"


def format_markdown(result: Mapping[str, Any], details: Mapping[str, Any]) -> str:
    """The table the README embeds: latency side by side, frame counts, targets, machine."""
    m = result["machine"]
    rows = [
        ("transport floor (bare echo, same transport)", result["transport_floor"]),
        (f"inference floor ({result['backend']} alone, streaming)", result["inference_floor"]),
        ("daemon share (its receive -> publish)", result["daemon"]),
        ("**daemon end-to-end** (published -> action received)", result["end_to_end"]),
        ("naive baseline end-to-end (PyTorch whole window per frame)", result["naive_baseline"]),
    ]
    lines = [
        f"Latency, ms ({details['settings']['frames']} frames of {details['frame']} at "
        f"{details['settings']['rate_fps']:g} frames/s over TCP loopback; backend {result['backend']}; "
        f"{m.get('cpus')} CPUs ({m.get('cpu_model', '')}); scheduling {m.get('scheduling', 'default')}):",
        "",
        "| path | p50 | p90 | p99 | p99.9 | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, stats in rows:
        lines.append(f"| {name} | " + " | ".join(_ms(stats.get(k)) for k in STAT_KEYS) + " |")
    f = result["frames"]
    ratio = result["overhead_ratio"]
    sustained = "-" if result["sustained_fps"] is None else f"{result['sustained_fps']:g}"
    accuracy = "-" if result["accuracy"] is None else f"{result['accuracy'] * 100:.1f} %"
    lines += [
        "",
        f"- overhead ratio (daemon end-to-end p50 / (transport p50 + inference p50)): "
        f"**{'-' if ratio is None else f'{ratio:.2f}'}**",
        f"- frames: sent {f['sent']}, decoded {f['decoded']}, skipped {f['skipped']}, lost {f['lost']}",
        f"- highest sustained zero-skip rate: **{sustained} frames/s**"
        + (f" ({details.get('ramp_note')})" if details.get("ramp_note") else ""),
        f"- decoded-action accuracy on the held-out recording: {accuracy}"
        + (f" ({details['model']['how']})" if details.get("model", {}).get("how") else ""),
        f"- machine: {m.get('cpus')} CPUs ({m.get('cpus_usable')} usable), {m.get('platform')}, "
        f"load average before/after {details.get('load_before')} / {details.get('load_after')}",
        "",
        "| target | goal | measured | met |",
        "|---|---|---:|---|",
    ]
    for check in details["targets"]:
        shown = _format_measured(check["key"], check["measured"])
        lines.append(f"| {check['target']} | {check['goal']} | {shown} | "
                     f"{'yes' if check['met'] else 'no, ' + check['missed_by']} |")
    breakdown = details.get("runs", {}).get("daemon", {}).get("breakdown")
    if breakdown:
        lines += ["", "Where the daemon's end-to-end time goes (ms):", "",
                  "| hop | p50 | p90 | p99 | p99.9 | max |", "|---|---:|---:|---:|---:|---:|"]
        for name, stats in breakdown.items():
            lines.append(f"| {name} | " + " | ".join(_ms(stats.get(k)) for k in STAT_KEYS) + " |")
    lines += ["", f"Command: `{details['settings']['command']}`", ""]
    return "\n".join(lines)


# --- the benchmark --------------------------------------------------------------------------


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
    main_data = data.limited(settings.frames)
    floor_data = data.limited(settings.floor_frames or settings.frames)
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

    # 1. Transport floor: the same frames through a bare echo.
    endpoints = loopback_endpoints()
    rt = settings.realtime_priority
    if rt is not None:  # after the inputs are ready: simulation and training stay at normal priority
        use_realtime_scheduling(rt)
    with start_echo(endpoints, runs_dir / "echo.log", rt) as echo:
        transport = replay_through(echo, "echo", floor_data, endpoints, rate, progress=progress,
                                   save_to=runs_dir / "echo.npz")
    log.info("transport floor", **_rounded(transport.report.end_to_end))

    # 2. Inference floor: the backend alone on the same frames.
    inference_stats, inference_us, inference_info = measure_inference_floor(
        bundle_path, floor_data, len(floor_data), settings.backend, settings.threads, progress)
    log.info("inference floor", **_rounded(inference_stats))
    details["inference"] = _json_safe(inference_info)

    # 3. The daemon, then the throughput ramp on the same process.
    endpoints = loopback_endpoints()
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
                record = {"frames": f.as_dict(), "achieved_fps": round(step.achieved_fps, 1),
                          "publisher_kept_pace": kept_pace, "publisher_late_p99_us": step.pacing_late_p99_us,
                          "end_to_end_p99_us": step.report.end_to_end["p99_us"],
                          "daemon_p99_us": step.report.daemon["p99_us"]}
                log.info("ramp step", rate_fps=fps, ok=ok, skipped=f.skipped, lost=f.lost,
                         achieved_fps=record["achieved_fps"])
                return ok, record

            sustained, ramp_steps = find_sustained_rate(
                run_at, ramp_rates(settings.rate_fps, settings.ramp_max_fps), settings.ramp_refine)
            if ramp_steps and all(s["ok"] for s in ramp_steps):
                details["ramp_note"] = f"no skip up to the highest rate tried, {settings.ramp_max_fps:g} frames/s"
            elif sustained is None:
                details["ramp_note"] = f"frames skipped already at {ramp_steps[0]['rate_fps']:g} frames/s, the lowest rate tried"
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
    result = assemble_result(daemon=main.report, transport=transport.report.end_to_end, inference=inference_stats,
                             naive=naive_stats, sustained_fps=sustained, backend=settings.backend, machine=machine)
    details["targets"] = target_checks(result, details.get("ramp_note"))
    details["runs"] = {
        run.name: {"rate": run.rate, "achieved_fps": round(run.achieved_fps, 2), "seconds": round(run.seconds, 1),
                   "pacing_late_p99_us": run.pacing_late_p99_us, "report": run.report.as_dict(),
                   "breakdown": run.breakdown, "daemon_counters": run.daemon_counters}
        for run in (transport, main, *([naive] if settings.naive else []))
    }
    details["seconds"] = round(time.monotonic() - started, 1)

    out = settings.out
    write_json_atomic(out, result)
    write_json_atomic(out.with_name(out.stem + "-details.json"), _json_safe(details))
    md_path = out.with_suffix(".md")
    tmp = md_path.with_name(f".{md_path.name}.tmp")
    tmp.write_text(format_markdown(result, details))
    os.replace(tmp, md_path)
    series = {"transport floor (echo)": transport.report.end_to_end_us, "inference floor": inference_us,
              "daemon share": main.report.daemon_us, "daemon end-to-end": main.report.end_to_end_us}
    if len(naive_us):
        series["naive baseline end-to-end"] = naive_us
    plot_latency(series, out.with_suffix(".png"),
                 title=f"{details['frame']} at {settings.rate_fps:g} frames/s, backend {settings.backend}")
    return result


def _check_daemon_runs(run: RunResult, backend: str, mode: str) -> None:
    """The daemon must have served with the backend and mode asked for (no silent fallback)."""
    status = run.daemon_status or {}
    got = (status.get("backend"), status.get("mode"))
    if backend != "auto" and got != (backend, mode):
        raise BenchError(f"{run.name}: the daemon ran backend/mode {got}, not {(backend, mode)}")


def _rounded(stats: Mapping[str, float | None]) -> dict[str, float | None]:
    return {k: (None if v is None else round(v, 1)) for k, v in stats.items()}


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


# --- CLI ------------------------------------------------------------------------------------


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
    for name in ("data", "bundle"):
        path = getattr(args, name)
        if path is not None and not path.exists():
            raise ValueError(f"--{name} {path} does not exist")
    return BenchSettings(
        out=args.out, work_dir=args.work_dir, data=args.data, bundle=args.bundle, frames=args.frames,
        floor_frames=args.floor_frames, naive_frames=args.naive_frames, rate_fps=args.rate, backend=args.backend,
        threads=args.threads, seed=args.seed, train_steps=args.train_steps, ramp=not args.no_ramp,
        ramp_step_s=args.ramp_step_seconds, ramp_max_fps=args.ramp_max_fps, naive=not args.no_naive,
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
    table = {"transport floor": result["transport_floor"], "inference floor": result["inference_floor"],
             "daemon share": result["daemon"], "daemon end-to-end": result["end_to_end"],
             "naive baseline": result["naive_baseline"]}
    print(format_latency_table(table))
    print(f"overhead ratio {result['overhead_ratio']}, sustained {result['sustained_fps']} frames/s, "
          f"frames {result['frames']}, accuracy {result['accuracy']}")
    print(f"wrote {settings.out}, {settings.out.with_suffix('.md')}, {settings.out.with_suffix('.png')}")
    return 0
