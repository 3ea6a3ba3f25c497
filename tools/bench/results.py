"""bench/latency.json and its table: the numbers side by side with their floors and targets."""

from __future__ import annotations

import contextlib
import math
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tools.bench.overload import format_overload
from tools.bench.report import STAT_KEYS, LatencyReport, LatencyStats


# The targets (benchmark figures, never asserted in tests). Floor-relative goals are
# worked out from the floors measured in the same run.
TARGETS: dict[str, tuple[str, str]] = {
    "end_to_end_p50_us": ("end-to-end p50", "<= bare floor p50 + inference p50 + 0.15 ms"),
    "overhead_ratio_p99": ("end-to-end p99 / (bare floor p99 + inference p99)", "<= 1.30"),
    "skipped": ("skipped frames", "<= 0"),
    "sustained_fps": ("sustained zero-skip rate (fps)", ">= 1000"),
}
P50_MARGIN_US = 150.0
P99_RATIO = 1.3
SUSTAINED_FPS = 1000.0


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


def _stats_or_empty(stats: LatencyStats | None) -> dict[str, float | None]:
    """The five statistics in µs, rounded to 0.1 µs (None where not measured)."""
    out: dict[str, float | None] = {}
    for key in STAT_KEYS:
        value = None if stats is None else stats.get(key)
        out[key] = None if value is None else round(float(value), 1)
    return out


def overhead_ratio(daemon_e2e: LatencyStats, floor: LatencyStats, inference: LatencyStats,
                   key: str = "p50_us") -> float | None:
    """daemon end-to-end / (floor + inference floor), at one percentile (p50 by default)."""
    parts = (daemon_e2e.get(key), floor.get(key), inference.get(key))
    if any(p is None for p in parts) or (parts[1] + parts[2]) <= 0:  # type: ignore[operator]
        return None
    return float(parts[0] / (parts[1] + parts[2]))  # type: ignore[operator]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def assemble_result(*, daemon: LatencyReport, bare: LatencyStats, transport: LatencyStats, inference: LatencyStats,
                    naive: LatencyStats | None, sustained_fps: float | None, backend: str,
                    machine: Mapping[str, Any], overload: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """bench/latency.json: the earlier keys (overhead_ratio is now the p50 ratio against the bare
    floor) plus bare_floor and the p50/p99 overhead ratios."""
    ratio_p50 = overhead_ratio(daemon.end_to_end, bare, inference, "p50_us")
    ratio_p99 = overhead_ratio(daemon.end_to_end, bare, inference, "p99_us")
    return {
        "daemon": _stats_or_empty(daemon.daemon),
        "end_to_end": _stats_or_empty(daemon.end_to_end),
        "bare_floor": _stats_or_empty(bare),
        "transport_floor": _stats_or_empty(transport),
        "inference_floor": _stats_or_empty(inference),
        "naive_baseline": _stats_or_empty(naive),
        "overhead_ratio": _round(ratio_p50),
        "overhead_ratio_p50": _round(ratio_p50),
        "overhead_ratio_p99": _round(ratio_p99),
        "frames": daemon.frames.as_dict(),
        "sustained_fps": sustained_fps,
        "accuracy": None if daemon.accuracy is None else round(daemon.accuracy, 4),
        "backend": backend,
        "machine": dict(machine),
        "overload": None if overload is None else _json_safe(overload),
    }


def target_checks(result: Mapping[str, Any], ramp_note: str | None = None) -> list[dict[str, Any]]:
    """Each target with its goal in this run's numbers, the measured value, met or not, and by
    how much it is missed."""
    e2e, bare, inference = result["end_to_end"], result["bare_floor"], result["inference_floor"]
    p50_goal = (None if bare["p50_us"] is None or inference["p50_us"] is None
                else bare["p50_us"] + inference["p50_us"] + P50_MARGIN_US)
    goals: dict[str, tuple[float | None, float | None, str]] = {  # key: (measured, goal, op)
        "end_to_end_p50_us": (e2e["p50_us"], p50_goal, "<="),
        "overhead_ratio_p99": (result["overhead_ratio_p99"], P99_RATIO, "<="),
        "skipped": (result["frames"]["skipped"], 0.0, "<="),
        "sustained_fps": (result["sustained_fps"], SUSTAINED_FPS, ">="),
    }
    checks = []
    for key, (label, rule) in TARGETS.items():
        value, goal, op = goals[key]
        met = value is not None and goal is not None and (value <= goal if op == "<=" else value >= goal)
        if value is None or goal is None:
            miss = ramp_note if key == "sustained_fps" and ramp_note else "not measured"
        elif met:
            miss = ""
        elif goal == 0:
            miss = f"{value:g} over"
        elif key.endswith("_us"):
            miss = f"{(value - goal) / 1000:.2f} ms ({abs(value / goal - 1) * 100:.0f} %) over"
        else:
            miss = f"{abs(value / goal - 1) * 100:.0f} % {'over' if op == '<=' else 'under'}"
        shown_goal = _format_measured(key, goal, op)
        if key == "end_to_end_p50_us" and goal is not None:
            shown_goal = f"{shown_goal} ({rule[3:]})"
        checks.append({"key": key, "target": label, "goal": shown_goal, "rule": rule, "goal_value": goal,
                       "measured": value, "met": met, "missed_by": miss})
    return checks


def _format_measured(key: str, value: float | None, op: str = "") -> str:
    prefix = f"{op} " if op else ""
    if value is None:
        return "-"
    if key.endswith("_us"):
        return f"{prefix}{value / 1000:.2f} ms"
    if key.startswith("overhead_ratio"):
        return f"{prefix}{value:.2f}"
    return f"{prefix}{value:g}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v / 1000:.2f}"


def _beyond_floors(result: Mapping[str, Any], paced: Mapping[str, Any] | None) -> list[str]:
    """What the daemon adds at p50 over the bare floor plus inference: with the tight-loop
    floor (the target's terms) and, when measured, with inference paced at the replay rate."""
    e2e, bare, inference = (result[k]["p50_us"] for k in ("end_to_end", "bare_floor", "inference_floor"))
    if e2e is None or bare is None or inference is None:
        return []
    line = f"- end-to-end p50 beyond bare floor + inference floor: {(e2e - bare - inference) / 1000:.2f} ms"
    if paced and paced.get("p50_us") is not None:
        line += (f"; beyond bare floor + inference paced at {paced['rate_fps']:g} frames/s: "
                 f"{(e2e - bare - paced['p50_us']) / 1000:.2f} ms")
    return [line]


def format_markdown(result: Mapping[str, Any], details: Mapping[str, Any]) -> str:
    """The table the README embeds: latency side by side, frame counts, targets, machine."""
    m = result["machine"]
    rows = [
        ("bare floor (pyzmq echo, no codec, same harness)", result["bare_floor"]),
        ("transport floor (protocol echo: frame decoded, action encoded)", result["transport_floor"]),
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
    paced = details.get("inference", {}).get("paced")
    if paced:  # a diagnosis beside the floor, not part of any ratio
        rows.insert(3, (f"inference alone paced at {paced['rate_fps']:g} frames/s (sleeping between calls, "
                        f"{paced['frames']} calls)", paced))
    for name, stats in rows:
        lines.append(f"| {name} | " + " | ".join(_ms(stats.get(k)) for k in STAT_KEYS) + " |")
    f = result["frames"]
    r50, r99 = result["overhead_ratio_p50"], result["overhead_ratio_p99"]
    sustained = "-" if result["sustained_fps"] is None else f"{result['sustained_fps']:g}"
    accuracy = "-" if result["accuracy"] is None else f"{result['accuracy'] * 100:.1f} %"
    lines += [
        "",
        "- overhead ratio, daemon end-to-end / (bare floor + inference alone): "
        f"**{'-' if r50 is None else f'{r50:.2f}'}** at p50, **{'-' if r99 is None else f'{r99:.2f}'}** at p99",
        *_beyond_floors(result, paced),
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
    overload = result.get("overload")
    if overload:
        lines += ["", *format_overload(overload["steps"], overload["base_fps"], overload["base_how"])]
    lines += ["", f"Command: `{details['settings']['command']}`", ""]
    return "\n".join(lines)


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
