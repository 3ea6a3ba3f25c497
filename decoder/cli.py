"""`actionloop serve [--config FILE.toml]`: run the decoder daemon in the foreground.

Everything else is configured through the settings tree (the TOML file and ``ACTIONLOOP_*``
environment variables, see deploy/decoder.toml), never through extra flags.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from pathlib import Path

import structlog

from decoder.settings import DecoderSettings, SettingsError, load_settings
from protocols.logconfig import configure_logging

log = structlog.get_logger(__name__)

EX_CONFIG = 78
ABANDONABLE_THREADS = ("load-model", "reload-model", "inference")  # sysexits.h: the unit file tells systemd not to restart on a configuration error


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None, metavar="FILE.toml",
        help="settings file; ACTIONLOOP_* environment variables override it (e.g. ACTIONLOOP_MODEL__BUNDLE=...)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        log.error("configuration error", error=str(exc))
        return EX_CONFIG
    if "logging" in settings.model_fields_set:  # the settings file/environment chose: it wins
        configure_logging(level=settings.logging.level, fmt=settings.logging.format)
    return run_service(settings)


def run_service(settings: DecoderSettings) -> int:
    """Run the daemon until it is stopped. 0: clean stop; 78: configuration or bundle error
    (restarting will not help); 1: startup failed otherwise, or a task crashed.
    May not return (os._exit) when native work had to be abandoned."""
    from decoder.service import DecoderService, StartupError

    service = DecoderService(settings)
    code = 0
    try:
        asyncio.run(service.serve())
    except StartupError as exc:
        log.error("startup failed", error=str(exc))
        code = exc.exit_code
    except BaseExceptionGroup:
        code = 1  # the service logged the traceback
    except KeyboardInterrupt:  # a SIGINT before the handlers were installed
        code = 130
    _exit_now_if_native_work_is_abandoned(code)
    return code


def _exit_now_if_native_work_is_abandoned(code: int) -> None:
    """A model load interrupted by SIGTERM, or an inference call that never returned, is still
    running native code (ONNX Runtime, TensorRT) on a daemon thread. Normal interpreter exit
    would tear that library down under it and abort; leave without running finalisers instead
    (sockets and the decision log are already closed)."""
    busy = [t.name for t in threading.enumerate() if t.daemon and t.is_alive() and t.name in ABANDONABLE_THREADS]
    if busy:
        log.warning("exiting without waiting for abandoned work", threads=busy)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
