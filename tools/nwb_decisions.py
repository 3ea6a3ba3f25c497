"""A daemon decision log as NWB (`actionloop log FILE --nwb OUT.nwb`), so the closed-loop record
sits next to the acquisition data in the lab's own format.

Written with pynwb (the `nwb` extra):

- `intervals/decoded_actions` (TimeIntervals): one row per debounced action, from its `onset`
  event to its `offset` (columns `label`, `index`, `onset_confidence`, `offset_confidence`,
  `model_id`, `onset_seq`, `offset_seq`, `closed`: False when the log ended mid-action, then
  the row stops at the last decision);
- `processing/closed_loop`: TimeSeries `decoded_class` (class index per decoded frame, -1 while
  the window fills), `decoded_confidence` and `decision_latency` (s from the frame's
  acquisition stamp to publication), one sample per action message.

Clock: every time is the frame's `t_acq_ns` (the frame publisher's CLOCK_MONOTONIC) minus
`t0_ns`, in seconds. `t0_ns` defaults to the first logged frame's; pass the acquisition's
first `t_acq_ns` to put decisions on the acquisition file's clock. `session_start_time` is the
wall-clock time of t0: given, or estimated from the log file's modification time (the last
record) minus the logged span; the file's `notes` say which.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from protocols.codec import PublishedMessage
from protocols.messages import Action, Event


class DecisionExportError(ValueError):
    """The log cannot be exported (nothing decoded, output exists, pynwb missing); names the file."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


@dataclass
class _Bout:
    label: str
    index: int
    start_ns: int
    onset_confidence: float
    model_id: str
    onset_seq: int
    stop_ns: int = 0
    offset_confidence: float = float("nan")
    offset_seq: int = -1
    closed: bool = False


@dataclass
class _Collected:
    t_ns: list[int] = field(default_factory=list)
    index: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    latency_ns: list[int] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    bouts: list[_Bout] = field(default_factory=list)


def collect(messages: Iterable[PublishedMessage]) -> _Collected:
    """Actions as per-frame samples and onset/offset events paired into bouts, in log order."""
    c = _Collected()
    open_bouts: dict[int, _Bout] = {}
    for m in messages:
        if isinstance(m, Action):
            c.t_ns.append(m.t_acq_ns)
            c.index.append(m.index if m.state == "decoding" else -1)
            c.confidence.append(m.confidence if m.state == "decoding" else float("nan"))
            c.latency_ns.append(m.t_pub_ns - m.t_acq_ns)
            if m.state == "decoding":
                c.names.setdefault(m.index, m.action)
            if m.model_id not in c.models:
                c.models.append(m.model_id)
        elif isinstance(m, Event):
            c.names.setdefault(m.index, m.action)
            if m.kind == "onset":
                bout = _Bout(m.action, m.index, m.t_acq_ns, m.confidence, m.model_id, m.seq)
                open_bouts[m.index] = bout
                c.bouts.append(bout)
            elif (bout := open_bouts.pop(m.index, None)) is not None:
                bout.stop_ns, bout.offset_confidence, bout.offset_seq, bout.closed = (
                    m.t_acq_ns, m.confidence, m.seq, True)
    last = max([*c.t_ns, *(b.start_ns for b in c.bouts)], default=0)
    for bout in open_bouts.values():  # the log ended during these
        bout.stop_ns = max(last, bout.start_ns)
    return c


def write_nwb(messages: Iterable[PublishedMessage], log_path: Path, out: Path, *, t0_ns: int | None = None,
              session_start: datetime | None = None, identifier: str | None = None, overwrite: bool = False) -> Path:
    """Write the decisions in `messages` (read from `log_path`) to `out`; returns `out`."""
    try:
        import pynwb
        from pynwb.epoch import TimeIntervals
    except ImportError:
        raise DecisionExportError(out, "writing NWB needs pynwb: install the nwb extra (pip install -e '.[nwb]')") from None
    if out.exists() and not overwrite:
        raise DecisionExportError(out, "already exists (pass --force to replace it)")
    if not out.parent.is_dir():
        raise DecisionExportError(out, "output directory does not exist")
    c = collect(messages)
    if not c.t_ns and not c.bouts:
        raise DecisionExportError(log_path, "holds no action or event to export")
    first = min([*c.t_ns, *(b.start_ns for b in c.bouts)])
    t0 = first if t0_ns is None else t0_ns
    if session_start is None:
        span_s = (max([*c.t_ns, *(b.stop_ns for b in c.bouts)]) - t0) / 1e9
        mtime = datetime.fromtimestamp(log_path.stat().st_mtime, tz=timezone.utc)
        session_start, how = mtime - timedelta(seconds=span_s), "estimated from the log file's modification time"
    else:
        how = "given"
    names = ", ".join(f"{i}={n}" for i, n in sorted(c.names.items()))
    nwb = pynwb.NWBFile(
        session_description=f"closed-loop decisions of the actionloop decoder, from {log_path.name}",
        identifier=identifier or f"actionloop-decisions-{log_path.stem}-{t0}",
        session_start_time=session_start,
        notes=(f"Times are the frames' acquisition stamps t_acq_ns (the frame publisher's CLOCK_MONOTONIC) "
               f"minus t0 = {t0} ns, in seconds; session_start_time is the wall-clock time of t0 ({how}). "
               f"Models: {', '.join(c.models) or 'none'}. Classes: {names or 'none'}."),
        source_script="actionloop log --nwb", source_script_file_name="tools/nwb_decisions.py",
    )
    table = TimeIntervals(name="decoded_actions", description="debounced actions of the decoder: onset to offset")
    for name, text in (("label", "action name"), ("index", "class index"),
                       ("onset_confidence", "confidence at the onset"), ("offset_confidence", "confidence at the offset"),
                       ("model_id", "model bundle id"), ("onset_seq", "frame sequence number of the onset"),
                       ("offset_seq", "frame sequence number of the offset (-1: none)"),
                       ("closed", "False when the log ended during the action (stop = last decision)")):
        table.add_column(name=name, description=text)
    for b in sorted(c.bouts, key=lambda b: b.start_ns):
        table.add_interval(start_time=(b.start_ns - t0) / 1e9, stop_time=(b.stop_ns - t0) / 1e9, label=b.label,
                           index=b.index, onset_confidence=b.onset_confidence, offset_confidence=b.offset_confidence,
                           model_id=b.model_id, onset_seq=b.onset_seq, offset_seq=b.offset_seq, closed=b.closed)
    if c.bouts:
        nwb.add_time_intervals(table)
    if c.t_ns:
        times = (np.asarray(c.t_ns, dtype=np.int64) - t0) / 1e9
        module = nwb.create_processing_module(name="closed_loop", description="per-frame decisions of the decoder")
        module.add(pynwb.TimeSeries(name="decoded_class", data=np.asarray(c.index, dtype=np.int16), unit="n.a.",
                                    timestamps=times, description=f"class index per decoded frame, -1 while the "
                                    f"window fills; classes {names}"))
        module.add(pynwb.TimeSeries(name="decoded_confidence", data=np.asarray(c.confidence, dtype=np.float32),
                                    unit="n.a.", timestamps=times, description="confidence (NaN while filling)"))
        module.add(pynwb.TimeSeries(name="decision_latency", data=np.asarray(c.latency_ns, dtype=np.float64) / 1e9,
                                    unit="s", timestamps=times,
                                    description="from the frame's acquisition stamp to the decision's publication"))
    tmp = out.with_name(f".{out.stem}.tmp.nwb")  # pynwb warns about any other suffix
    try:
        with pynwb.NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def parse_time(value: str) -> datetime:
    """ISO 8601; a time without a zone is UTC."""
    t = datetime.fromisoformat(value)
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)
