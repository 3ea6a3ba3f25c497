"""The `actionloop` command: one entry point, subcommands dispatched lazily.

Each subcommand lives in its own module exposing::

    def configure(parser: argparse.ArgumentParser) -> None   # add arguments
    def run(args: argparse.Namespace) -> int                 # do the work, return exit code

and is listed in COMMANDS below by import path, so that `actionloop --help` does not
import torch, TensorRT or anything else heavy.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from protocols.logconfig import configure_logging

# name -> (module path, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("tools.simulate_cli", "write a simulated multi-animal dataset"),
    "inspect": ("tools.inspect_cli", "summarise a dataset (animals, trials, rates, labels, domain gap)"),
    "import": ("tools.import_cli", "import TIFF, NumPy, suite2p or NWB recordings (pose: DeepFly3D, DeepLabCut, SLEAP, Anipose) into the recording format"),
    "train": ("trainer.cli_train", "train a neural encoder (contrastive, swapping, baselines)"),
    "evaluate": ("trainer.cli_evaluate", "linear-probe evaluation: JSON report, tables, figures"),
    "bench-train": ("trainer.cli_bench", "run the whole method comparison and write bench/train.json"),
    "export": ("trainer.cli_export", "export a checkpoint to a self-describing model bundle"),
    "engine": ("decoder.backends.engine_cli", "build or inspect the cached TensorRT engine of a bundle"),
    "bench": ("tools.bench.inference", "per-backend inference latency, streaming vs whole window"),
    "serve": ("decoder.cli", "run the decoder daemon"),
    "replay": ("tools.bench.replay", "replay a recorded trial into a running daemon and report latency"),
    "replay-bench": ("tools.bench.latency", "the full latency benchmark with floors, written to bench/latency.json"),
    "bench-serial": ("tools.bench.serial", "decision -> serial TTL byte latency over a pty, written to bench/serial.json"),
    "log": ("tools.decision_log", "read back a daemon decision log"),
    "actions": ("tools.print_actions", "print live actions and events from a daemon"),
    "top": ("tools.top", "live view of one daemon: state, model, frame rates, latency, counters, last events"),
    "bridge": ("tools.bridges.cli", "microscope bridges: publish frames from acquisition software (tiff --follow DIR)"),
    "control": ("tools.control_cli", "send a control request (status, ping, pause, resume, reload) to a daemon"),
}


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(
        prog="actionloop",
        description="Closed-loop action decoding from 2-photon imaging: train, export, serve, replay.",
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    parser.add_argument(
        "--log-format", choices=["auto", "json", "console"], default="auto",
        help="auto: human-readable on a terminal, JSON lines otherwise (journald)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser, sub


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, sub = build_parser()
    # Parse only up to the command name; the command's own parser takes the rest.
    top, rest = parser.parse_known_args(argv)
    if top.command is None:
        parser.print_help()
        return 2
    module_path, help_text = COMMANDS[top.command]
    module = importlib.import_module(module_path)
    command_parser = argparse.ArgumentParser(prog=f"actionloop {top.command}", description=help_text)
    module.configure(command_parser)
    args = command_parser.parse_args(rest)
    configure_logging(level=top.log_level, fmt=top.log_format)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
