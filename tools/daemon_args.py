"""Finding a running daemon from the command line (`actionloop control`, `actionloop top`).

``--endpoint`` names the socket; without it the endpoint comes from the daemon's own settings
(``--config FILE.toml`` and the ``ACTIONLOOP_*`` environment). ``--curve-secret`` and
``--curve-server`` give the CURVE keys when the daemon runs with CURVE.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

from decoder.settings import SettingsError, load_settings
from protocols.client import CurveClientKeys


class DaemonArgsError(ValueError):
    """The options do not say how to reach the daemon; the message says why (exit status 2)."""


def add_daemon_arguments(parser: argparse.ArgumentParser, socket: Literal["control", "actions"]) -> None:
    parser.add_argument("--endpoint", default=None, help=f"the daemon's {socket} endpoint (default: sockets.{socket} of the settings)")
    parser.add_argument("--config", type=Path, default=None, help="the daemon's settings file, to find its endpoint")
    parser.add_argument("--curve-secret", type=Path, default=None, help="CURVE: this client's .key_secret file")
    parser.add_argument("--curve-server", type=Path, default=None, help="CURVE: the daemon's public .key file")


def daemon_endpoint(args: argparse.Namespace, socket: Literal["control", "actions"]) -> tuple[str, CurveClientKeys | None]:
    """The endpoint to connect to and the CURVE keys (None without CURVE)."""
    if (args.curve_secret is None) != (args.curve_server is None):
        raise DaemonArgsError("CURVE needs both --curve-secret and --curve-server")
    if args.endpoint:
        endpoint = str(args.endpoint)
    else:
        try:
            endpoint = str(getattr(load_settings(args.config).sockets, socket))
        except SettingsError as exc:
            raise DaemonArgsError(f"configuration error: {exc}") from exc
    curve = CurveClientKeys.from_files(args.curve_secret, args.curve_server) if args.curve_secret else None
    return endpoint, curve
