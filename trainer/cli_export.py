"""`actionloop export --checkpoint CKPT --out BUNDLE_DIR [--calibrate TRIAL ... | --animal NAME]`:
checkpoint -> verified model bundle (session-calibrated encoders are exported for one animal)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="training checkpoint (.pt) to export")
    parser.add_argument("--out", required=True, type=Path, help="bundle directory to create")
    parser.add_argument("--calibrate", nargs="+", type=Path, default=[], metavar="TRIAL",
                        help="session-calibrated encoders: trial file(s) of the animal the bundle will decode "
                        "(no labels needed; a minute of frames is enough)")
    parser.add_argument("--animal", default=None,
                        help="session-calibrated encoders: decode this training animal with its stored calibration")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    parser.add_argument("--accept-calibration", action="store_true",
                        help="export even when the new animal's calibration looks unreliable (its fit at the edge "
                        "of the search range, or a registration score far below the training animals')")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from protocols.bundle import BundleError
    from trainer.export import ExportError, export_checkpoint

    try:
        bundle = export_checkpoint(
            args.checkpoint, args.out, overwrite=args.force, progress=not args.no_progress and sys.stderr.isatty(),
            calibration_trials=args.calibrate, animal=args.animal, accept_calibration=args.accept_calibration,
        )
    except (ExportError, BundleError) as exc:
        log.error("export failed", error=str(exc))
        return 1
    summary = bundle.summary()
    summary["export_check_max_abs_diff"] = max(bundle.manifest.export_check.values(), default=None)
    print(json.dumps(summary, indent=2))
    return 0
