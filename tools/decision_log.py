"""`actionloop log FILE [--all] [--follow] [--json] [--only action,event,status]`: read a decision log.

Prints one line per published message (actions, debounced events, heartbeats) as the daemon
sent it, and a count summary on stderr at the end. ``--json`` writes JSON lines for scripts;
``--follow`` keeps reading as the daemon appends (and follows rotation); ``--all`` starts with
the rotated files (``FILE.N`` ... ``FILE.1``), oldest first. ``--nwb OUT.nwb`` writes the
actions and events into an NWB file instead (tools/nwb_decisions.py says what goes where).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from decoder.decision_log import DecisionLogError, read_records, rotated_paths
from protocols.codec import PublishedMessage, decode
from protocols.errors import ProtocolError
from protocols.messages import Action, Event, Status

KINDS = {"action": Action, "event": Event, "status": Status}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="decision log (decision_log.path of the daemon)")
    parser.add_argument("--all", action="store_true", help="read the rotated files first, oldest first")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing as records are appended")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    parser.add_argument(
        "--only", default="action,event,status", help="comma-separated kinds to print (action, event, status)"
    )
    nwb = parser.add_argument_group("NWB export (the nwb extra)")
    nwb.add_argument("--nwb", type=Path, metavar="OUT.nwb", help="write actions and events to this NWB file")
    nwb.add_argument("--t0-ns", type=int, help="t_acq_ns that is time 0 in the NWB file, e.g. the acquisition's "
                                               "first frame (default: the first logged frame)")
    nwb.add_argument("--session-start", help="wall-clock time of t0, ISO 8601 (default: estimated from the log "
                                             "file's modification time)")
    nwb.add_argument("--force", action="store_true", help="replace an existing NWB file")


def message_dict(message: PublishedMessage) -> dict[str, Any]:
    kind = next(name for name, cls in KINDS.items() if isinstance(message, cls))
    wire = message.to_wire()
    wire.pop("v", None)
    return {"type": kind, **wire}


def format_line(message: PublishedMessage) -> str:
    if isinstance(message, Action):
        latency_us = (message.t_pub_ns - message.t_recv_ns) / 1e3
        label = message.action if message.state == "decoding" else f"({message.state})"
        return (
            f"action  seq={message.seq:<8d} {label:<20s} conf={message.confidence:5.3f} "
            f"daemon={latency_us:8.1f}us dropped={message.dropped} skipped={message.skipped}"
        )
    if isinstance(message, Event):
        return (
            f"event   seq={message.seq:<8d} {message.kind.upper():<6s} {message.action:<13s} "
            f"conf={message.confidence:5.3f} duration={message.duration_ns / 1e6:.1f}ms"
        )
    c = message.counters
    return (
        f"status  {message.state:<8s} uptime={message.uptime_s:.1f}s model={message.model_id[:12]} "
        f"decoded={c.get('frames_decoded', 0)} skipped={c.get('frames_skipped', 0)} lost={c.get('frames_lost', 0)} "
        f"p99={message.latency_us.get('p99_us', 0.0)}us"
    )


def iter_messages(files: list[Path], follow: bool, counts: Counter[str]) -> Iterator[PublishedMessage]:
    for index, path in enumerate(files):
        last = index == len(files) - 1
        for parts in read_records(path, follow=follow and last):
            try:
                message = decode(parts)
            except ProtocolError as exc:
                counts["undecodable"] += 1
                print(f"{path}: skipping an undecodable record: {exc.reason}", file=sys.stderr)
                continue
            yield message


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    wanted = {k.strip() for k in args.only.split(",") if k.strip()}
    unknown = wanted - KINDS.keys()
    if unknown:
        print(f"--only: unknown kind(s) {', '.join(sorted(unknown))}; use action, event, status", file=sys.stderr)
        return 2
    files = rotated_paths(args.file) if args.all else [args.file]
    if not files or not args.file.exists():
        print(f"{args.file}: no such decision log", file=sys.stderr)
        return 1
    classes = tuple(KINDS[k] for k in wanted)
    counts: Counter[str] = Counter()
    if args.nwb is not None:
        return _export_nwb(args, files, counts)
    try:
        for message in iter_messages(files, args.follow, counts):
            counts[type(message).__name__.lower()] += 1
            if isinstance(message, classes):
                out.write((json.dumps(message_dict(message)) if args.json else format_line(message)) + "\n")
                if args.follow:
                    out.flush()
    except DecisionLogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `actionloop log FILE | head`
        sys.stderr.close()
        return 0
    summary = f"{counts['action']} actions, {counts['event']} events, {counts['status']} status messages"
    print(f"{summary} in {len(files)} file(s)" + (f", {counts['undecodable']} undecodable" if counts["undecodable"] else ""),
          file=sys.stderr)
    return 0


def _export_nwb(args: argparse.Namespace, files: list[Path], counts: Counter[str]) -> int:
    from tools.nwb_decisions import DecisionExportError, parse_time, write_nwb

    if args.follow:
        print("--nwb writes what the log holds now; it cannot --follow", file=sys.stderr)
        return 2
    try:
        start = parse_time(args.session_start) if args.session_start else None
        messages = list(iter_messages(files, False, counts))
        out = write_nwb(messages, args.file, args.nwb, t0_ns=args.t0_ns, session_start=start, overwrite=args.force)
    except (DecisionLogError, DecisionExportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    kinds = Counter(type(m).__name__.lower() for m in messages)
    print(f"{out}: {kinds['action']} actions and {kinds['event']} events from {len(files)} file(s)", file=sys.stderr)
    return 0
