"""Latency and accuracy report of one replay: pure functions over what was sent and received.

The replay tool records, for every published frame, its sequence number and the replay's
monotonic publish stamp, and for every action it receives the arrival stamp plus the daemon's
own receive/publish stamps carried in the message. Everything here is computed from those
arrays alone (no sockets, no clocks), so it is easy to test and the same code serves the
`replay` command and the benchmark.

Definitions (all clocks are `time.monotonic_ns()` on the same host, so they compare):
- end-to-end latency: action received by the replay - frame published by the replay;
- daemon share: the daemon's publish stamp - its receive stamp (its own work, queueing included);
- sent: frames published; decoded: distinct sent frames that got an action back;
- skipped: frames the daemon reports it skipped on purpose to keep up with the newest frame;
- lost: sent frames that neither got an action nor were reported skipped (transport drops,
  frames still in flight when the replay stopped waiting).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50_us", 50.0),
    ("p90_us", 90.0),
    ("p99_us", 99.0),
    ("p999_us", 99.9),
)
STAT_KEYS: tuple[str, ...] = tuple(key for key, _ in PERCENTILES) + ("max_us",)

LatencyStats = dict[str, float | None]


def latency_stats_us(samples_ns: Sequence[int] | np.ndarray) -> LatencyStats:
    """p50/p90/p99/p99.9/max of latencies given in ns, returned in µs (None when there are none).

    Percentiles use linear interpolation between order statistics (numpy's default), so
    p99.9 of 5,000 samples lies between the 5th and 6th largest values.
    """
    values = np.asarray(samples_ns, dtype=np.float64).ravel()
    if values.size == 0:
        return {key: None for key in STAT_KEYS}
    if not np.all(np.isfinite(values)):
        raise ValueError("latency samples contain NaN or infinity")
    qs = np.percentile(values, [q for _, q in PERCENTILES]) / 1e3
    stats: LatencyStats = {key: float(v) for (key, _), v in zip(PERCENTILES, qs, strict=True)}
    stats["max_us"] = float(values.max() / 1e3)
    return stats


@dataclass(frozen=True)
class ReplayLog:
    """Raw measurements of one replay (what the replay loop records; no derived values).

    `labels[i]` is the recording's label of the frame published as `sent_seq[i]` (-1 when
    unlabelled). `action_index` is -1 for actions that carry no decision (window still filling).
    `daemon_skipped` is the daemon's own count of frames it skipped during the replay.
    """

    sent_seq: np.ndarray
    sent_ns: np.ndarray
    action_seq: np.ndarray
    received_ns: np.ndarray
    daemon_recv_ns: np.ndarray
    daemon_pub_ns: np.ndarray
    action_index: np.ndarray
    daemon_skipped: int = 0
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    # How late each frame went out against its schedule (ns); None when there was no schedule.
    pacing_late_ns: np.ndarray | None = None
    # The daemon's "inference done" stamp per action, for the breakdown of its share (optional).
    daemon_done_ns: np.ndarray | None = None
    # Each action's `skipped` (frames not decoded since the previous action; optional).
    action_skipped: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.sent_seq) != len(self.sent_ns):
            raise ValueError(
                f"sent_seq has {len(self.sent_seq)} entries but sent_ns has {len(self.sent_ns)}"
            )
        n_actions = len(self.action_seq)
        for name in ("received_ns", "daemon_recv_ns", "daemon_pub_ns", "action_index", "daemon_done_ns",
                     "action_skipped"):
            if getattr(self, name) is not None and len(getattr(self, name)) != n_actions:
                raise ValueError(
                    f"{name} has {len(getattr(self, name))} entries but action_seq has {n_actions}"
                )
        if self.labels is not None and len(self.labels) != len(self.sent_seq):
            raise ValueError(
                f"labels has {len(self.labels)} entries but {len(self.sent_seq)} frames were sent"
            )
        if len(np.unique(np.asarray(self.sent_seq))) != len(self.sent_seq):
            raise ValueError("sent_seq contains repeated sequence numbers")
        if self.daemon_skipped < 0:
            raise ValueError(f"daemon_skipped must be >= 0, got {self.daemon_skipped}")


@dataclass(frozen=True)
class FrameCounts:
    sent: int
    decoded: int
    skipped: int
    lost: int
    duplicates: int = 0  # actions for a frame that already had one
    unexpected: int = 0  # actions for a sequence number that was never sent

    def as_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "decoded": self.decoded, "skipped": self.skipped, "lost": self.lost}


@dataclass(frozen=True)
class LatencyReport:
    end_to_end: LatencyStats
    daemon: LatencyStats
    frames: FrameCounts
    accuracy: float | None
    confusion: np.ndarray | None  # rows: true class, columns: decoded class
    class_names: tuple[str, ...]
    n_scored: int  # labelled frames with a decision, the denominator of accuracy
    # Per decoded frame, in µs, kept for plots and further analysis.
    end_to_end_us: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))
    daemon_us: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-frame arrays)."""
        return {
            "end_to_end": dict(self.end_to_end),
            "daemon": dict(self.daemon),
            "frames": {
                **self.frames.as_dict(),
                "duplicates": self.frames.duplicates,
                "unexpected": self.frames.unexpected,
            },
            "accuracy": self.accuracy,
            "n_scored": self.n_scored,
            "class_names": list(self.class_names),
            "confusion": None if self.confusion is None else self.confusion.astype(int).tolist(),
        }


def build_report(log: ReplayLog) -> LatencyReport:
    """Match actions to sent frames by sequence number and summarise latency and accuracy."""
    sent_seq = np.asarray(log.sent_seq, dtype=np.int64)
    sent_ns = np.asarray(log.sent_ns, dtype=np.int64)
    action_seq = np.asarray(log.action_seq, dtype=np.int64)

    # First action per sequence number counts; later ones are duplicates.
    _, first = np.unique(action_seq, return_index=True)
    first.sort()
    duplicates = len(action_seq) - len(first)
    candidates = action_seq[first]
    if len(sent_seq):
        order = np.argsort(sent_seq)
        sorted_seq = sent_seq[order]
        pos = np.minimum(np.searchsorted(sorted_seq, candidates), len(sent_seq) - 1)
        known = sorted_seq[pos] == candidates
    else:
        order = pos = np.zeros(len(candidates), dtype=np.int64)
        known = np.zeros(len(candidates), dtype=bool)
    matched_actions = first[known]
    matched_frames = order[pos[known]]  # index into the sent arrays
    unexpected = int(np.count_nonzero(~known))

    received = np.asarray(log.received_ns, dtype=np.int64)[matched_actions]
    e2e_ns = received - sent_ns[matched_frames]
    d_recv = np.asarray(log.daemon_recv_ns, dtype=np.int64)[matched_actions]
    d_pub = np.asarray(log.daemon_pub_ns, dtype=np.int64)[matched_actions]
    daemon_ns = d_pub - d_recv
    if np.any(e2e_ns < 0):
        raise ValueError("an action arrived before its frame was sent: clocks are not comparable")
    if np.any(daemon_ns < 0):
        raise ValueError("an action's daemon publish stamp precedes its receive stamp")

    decoded = len(matched_actions)
    skipped = min(int(log.daemon_skipped), len(sent_seq) - decoded)
    lost = len(sent_seq) - decoded - skipped

    accuracy: float | None = None
    confusion: np.ndarray | None = None
    n_scored = 0
    if log.labels is not None and log.class_names:
        n_classes = len(log.class_names)
        truth = np.asarray(log.labels, dtype=np.int64)[matched_frames]
        decided = np.asarray(log.action_index, dtype=np.int64)[matched_actions]
        if np.any(decided >= n_classes):
            raise ValueError(f"an action index is >= the number of classes ({n_classes})")
        if np.any(truth >= n_classes):
            raise ValueError(f"a label is >= the number of classes ({n_classes})")
        scored = (truth >= 0) & (decided >= 0)
        n_scored = int(np.count_nonzero(scored))
        confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
        np.add.at(confusion, (truth[scored], decided[scored]), 1)
        accuracy = float(np.trace(confusion) / n_scored) if n_scored else None

    return LatencyReport(
        end_to_end=latency_stats_us(e2e_ns),
        daemon=latency_stats_us(daemon_ns),
        frames=FrameCounts(sent=len(sent_seq), decoded=decoded, skipped=skipped, lost=lost,
                           duplicates=duplicates, unexpected=unexpected),
        accuracy=accuracy,
        confusion=confusion,
        class_names=tuple(log.class_names),
        n_scored=n_scored,
        end_to_end_us=e2e_ns / 1e3,
        daemon_us=daemon_ns / 1e3,
    )


def latency_breakdown(log: ReplayLog) -> dict[str, LatencyStats]:
    """Where end-to-end time goes, hop by hop, for the first action of every sent frame:
    frame in flight to the daemon, the daemon's receive -> inference done (waiting for and running
    the model), inference done -> publish, and the action in flight back to the replay."""
    sent = dict(zip(np.asarray(log.sent_seq).tolist(), np.asarray(log.sent_ns).tolist(), strict=True))
    _, first = np.unique(np.asarray(log.action_seq), return_index=True)
    keep = np.array([i for i in first if int(log.action_seq[i]) in sent], dtype=np.int64)
    if len(keep) == 0:
        return {}
    sent_ns = np.array([sent[int(log.action_seq[i])] for i in keep], dtype=np.int64)
    recv, pub = np.asarray(log.daemon_recv_ns)[keep], np.asarray(log.daemon_pub_ns)[keep]
    out = {"frame in flight (replay -> daemon)": latency_stats_us(recv - sent_ns)}
    if log.daemon_done_ns is not None:
        done = np.asarray(log.daemon_done_ns)[keep]
        out["daemon: receive -> inference done"] = latency_stats_us(done - recv)
        out["daemon: inference done -> publish"] = latency_stats_us(pub - done)
    out["action in flight (daemon -> replay)"] = latency_stats_us(np.asarray(log.received_ns)[keep] - pub)
    return out


# --- presentation -------------------------------------------------------------------------


def _fmt_us(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value / 1e3:.3f} ms" if value >= 10_000 else f"{value:.0f} µs"


def format_latency_table(rows: Mapping[str, LatencyStats]) -> str:
    """A fixed-width table: one row per measured path, columns p50 ... max."""
    headers = ("", "p50", "p90", "p99", "p99.9", "max")
    body = [[name, *(_fmt_us(stats.get(key)) for key in STAT_KEYS)] for name, stats in rows.items()]
    widths = [max(len(str(r[i])) for r in [list(headers), *body]) for i in range(len(headers))]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in body:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)


def format_confusion(confusion: np.ndarray, class_names: Sequence[str]) -> str:
    """Rows are true classes, columns decoded classes (abbreviated headers)."""
    short = [name[:8] for name in class_names]
    width = max(8, *(len(str(int(v))) for v in confusion.ravel())) if confusion.size else 8
    name_w = max(len(n) for n in class_names)
    lines = [" " * name_w + "  " + " ".join(s.rjust(width) for s in short)]
    for name, row in zip(class_names, confusion, strict=True):
        lines.append(name.ljust(name_w) + "  " + " ".join(str(int(v)).rjust(width) for v in row))
    return "\n".join(lines)


def format_report(report: LatencyReport) -> str:
    """What the `replay` command prints: latency table, frame counts, accuracy."""
    f = report.frames
    parts = [
        format_latency_table({"end-to-end": report.end_to_end, "daemon share": report.daemon}),
        "",
        f"frames: sent {f.sent}  decoded {f.decoded}  skipped {f.skipped}  lost {f.lost}"
        + (f"  duplicate actions {f.duplicates}" if f.duplicates else "")
        + (f"  unexpected actions {f.unexpected}" if f.unexpected else ""),
    ]
    if report.accuracy is not None and report.confusion is not None:
        parts += [
            f"accuracy: {report.accuracy:.3f} over {report.n_scored} labelled decoded frames",
            "confusion (rows: recorded label, columns: decoded action):",
            format_confusion(report.confusion, report.class_names),
        ]
    elif report.class_names:
        parts.append("accuracy: - (no labelled frame got a decision)")
    return "\n".join(parts)


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON through a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, allow_nan=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plot_latency(series_us: Mapping[str, np.ndarray], path: Path, title: str = "Latency") -> Path:
    """Histogram (log counts) and CDF of each latency series, saved as a PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {name: np.asarray(v, dtype=np.float64) for name, v in series_us.items() if len(v)}
    if not series:
        raise ValueError("no latency samples to plot")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_hist, ax_cdf) = plt.subplots(1, 2, figsize=(12, 4.5))
    lo = max(min(float(v.min()) for v in series.values()), 1.0)
    hi = max(float(v.max()) for v in series.values())
    bins = np.geomspace(lo, max(hi, lo * 1.01), 80)
    for name, values in series.items():
        ax_hist.hist(values, bins=bins, histtype="step", linewidth=1.5, label=f"{name} (n={len(values)})")
        xs = np.sort(values)
        ys = np.arange(1, len(xs) + 1) / len(xs)
        (line,) = ax_cdf.plot(xs, ys, linewidth=1.5, label=name)
        ax_cdf.axvline(float(np.percentile(values, 99)), color=line.get_color(), linestyle=":", linewidth=1)
    ax_hist.set_xscale("log")
    ax_hist.set_yscale("log")
    ax_hist.set_xlabel("latency (µs, log scale)")
    ax_hist.set_ylabel("frames")
    ax_hist.set_title("histogram")
    ax_hist.legend(fontsize=8)
    ax_cdf.set_xscale("log")
    ax_cdf.set_xlabel("latency (µs, log scale; dotted: p99)")
    ax_cdf.set_ylabel("fraction of frames")
    ax_cdf.set_title("cumulative distribution")
    ax_cdf.grid(True, which="both", alpha=0.3)
    ax_cdf.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
