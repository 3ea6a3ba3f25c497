"""`actionloop control status|ping|pause|resume|reload BUNDLE`: talk to a running daemon.

The endpoint is the daemon's ``sockets.control`` setting: taken from ``--config FILE.toml``
(and the ``ACTIONLOOP_*`` environment) unless ``--endpoint`` names another daemon.
Exit status: 0 done, 1 refused by the daemon, 2 no answer within the timeout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import zmq

from protocols.client import ControlClient, ControlError
from tools.daemon_args import DaemonArgsError, add_daemon_arguments, daemon_endpoint

COMMANDS = ("status", "ping", "pause", "resume", "reload")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("bundle", nargs="?", type=Path, help="reload: the new model bundle directory")
    add_daemon_arguments(parser, "control")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait (default 5; reload 120)")
    parser.add_argument("--json", action="store_true", help="print the reply as JSON")


def _print_reply(command: str, data: dict[str, Any], out: TextIO) -> None:
    if command == "ping":
        out.write("pong\n")
        return
    counters = data.pop("counters", {})
    latency = data.pop("latency_us", {})
    for key, value in data.items():
        out.write(f"{key:>20s}: {value}\n")
    if counters:
        out.write(f"{'counters':>20s}: " + ", ".join(f"{k}={v}" for k, v in counters.items() if v) + "\n")
    if latency:
        out.write(f"{'latency (us)':>20s}: " + ", ".join(f"{k.removesuffix('_us')}={v}" for k, v in latency.items()) + "\n")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.command == "reload" and args.bundle is None:
        print("reload needs the bundle directory: actionloop control reload BUNDLE", file=sys.stderr)
        return 2
    try:
        endpoint, curve = daemon_endpoint(args, "control")
    except DaemonArgsError as exc:
        print(exc, file=sys.stderr)
        return 2
    timeout = args.timeout if args.timeout is not None else (120.0 if args.command == "reload" else 5.0)
    request_args: dict[str, Any] = {"bundle": str(args.bundle.resolve())} if args.command == "reload" else {}
    context = zmq.Context()
    try:
        with ControlClient(endpoint, context=context, curve=curve) as client:
            started = time.monotonic()
            reply = client.request(args.command, timeout=timeout, **request_args)
            round_trip_ms = (time.monotonic() - started) * 1e3
    except ControlError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"no answer from {endpoint} within {timeout} s (is the daemon running?)", file=sys.stderr)
        return 2
    finally:
        context.destroy(linger=0)
    data = dict(reply.data)
    if args.json:
        out.write(json.dumps({"command": args.command, "round_trip_ms": round(round_trip_ms, 3), **data}) + "\n")
    else:
        _print_reply(args.command, data, out)
        if args.command == "ping":
            out.write(f"round trip {round_trip_ms:.2f} ms\n")
    return 0
