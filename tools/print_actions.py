"""Print a decoder's live actions, events and heartbeats: the smallest experiment-control client.

    actionloop actions --endpoint tcp://127.0.0.1:5556
    actionloop actions --events-only          # just debounced onsets/offsets

Also a template: everything here is the public client library (protocols.client).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from protocols.client import ActionSubscriber
from protocols.messages import TOPIC_ACTION, TOPIC_EVENT, TOPIC_STATUS, Action, Event, Status


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5556", help="the decoder's PUB endpoint")
    parser.add_argument("--events-only", action="store_true", help="only onsets/offsets, no per-frame actions")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    parser.add_argument("--count", type=int, default=0, help="stop after this many messages (0: never)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds of silence before warning that the decoder looks dead")


def format_message(message: Action | Event | Status) -> str:
    if isinstance(message, Action):
        if message.state == "filling":
            return f"frame {message.seq:>8}  filling window"
        latency_ms = (message.t_pub_ns - message.t_recv_ns) / 1e6
        return (
            f"frame {message.seq:>8}  {message.action:<20} p={message.confidence:.2f}  "
            f"decoder {latency_ms:.2f} ms  skipped {message.skipped} dropped {message.dropped}"
        )
    if isinstance(message, Event):
        return f"EVENT {message.kind:<6} {message.action} (frame {message.seq}, p={message.confidence:.2f})"
    latency = message.latency_us
    return (
        f"status {message.state} backend={message.backend} uptime={message.uptime_s:.0f}s "
        f"p50={latency.get('p50_us', float('nan')):.0f}us p99={latency.get('p99_us', float('nan')):.0f}us "
        + (f"age p99={latency['age_p99_us']:.0f}us " if "age_p99_us" in latency else "")
        + f"{message.counters}"
    )


def run(args: argparse.Namespace) -> int:
    topics = [TOPIC_EVENT, TOPIC_STATUS] if args.events_only else [TOPIC_ACTION, TOPIC_EVENT, TOPIC_STATUS]
    received = 0
    with ActionSubscriber(args.endpoint, topics=topics) as subscriber:
        while args.count == 0 or received < args.count:
            try:
                message = subscriber.recv(timeout=args.timeout)
            except TimeoutError:
                print(f"no message for {args.timeout} s: is the decoder running at {args.endpoint}?", file=sys.stderr)
                continue
            except KeyboardInterrupt:
                break
            received += 1
            if args.json:
                print(json.dumps({"type": type(message).__name__.lower(), "received_ns": time.monotonic_ns(), **message.to_wire()}))
            else:
                print(format_message(message), flush=True)
    return 0
