"""`python -m decoder [--config FILE.toml]`: build the settings, configure logging, run the daemon."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from decoder.cli import EX_CONFIG, configure, run_service
from decoder.settings import SettingsError, load_settings
from protocols.logconfig import configure_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m decoder", description="run the actionloop decoder daemon")
    configure(parser)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        configure_logging()
        print(f"configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    configure_logging(level=settings.logging.level, fmt=settings.logging.format)
    return run_service(settings)


if __name__ == "__main__":
    raise SystemExit(main())
