"""`actionloop simulate`: write a simulated multi-animal dataset (and an overview figure)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    from tools.simulator.presets import PRESETS

    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                        help="tiny: 4 animals x 2 trials x 20 s, 64x64 (tests, demo); "
                             "bench: 8 animals x 3 trials x 60 s, 256x256 (trainer benchmark); "
                             "tiny-varied, bench-varied: the same sizes, animals that also differ after "
                             "rigid alignment (deformed anatomy, visible subset, gains, partly shared tuning)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed and preset give the same bytes")
    parser.add_argument("--out", type=Path, required=True, help="dataset directory to write (created)")
    parser.add_argument("--animals", type=int, help="override the preset's number of animals")
    parser.add_argument("--trials", type=int, help="override the preset's trials per animal")
    parser.add_argument("--seconds", type=float, help="override the preset's trial duration")
    parser.add_argument("--frame-shape", type=int, nargs=2, metavar=("H", "W"), help="override the frame size")
    parser.add_argument("--no-figure", action="store_true", help="skip the overview PNG")
    parser.add_argument("--force", action="store_true", help="write into a directory that already holds trials")


def _remove_stale_trials(out: Path, written: list[Path]) -> None:
    """After --force: trials of an earlier, larger simulation would silently join this dataset.
    Remove those the simulator wrote; leave (and warn about) anything else."""
    from trainer.data.recording import RecordingError, list_trials, open_trial

    for p in set(list_trials(out)) - set(written):
        try:
            with open_trial(p) as t:
                simulated = t.attrs.get("source") == "simulator"
        except RecordingError:
            simulated = False
        if simulated:
            p.unlink()
            log.warning("removed a trial of an earlier simulation", path=str(p))
        else:
            log.warning("the dataset directory holds a trial this simulation did not write", path=str(p))


def run(args: argparse.Namespace) -> int:
    from tools.simulator import get_preset, simulate_dataset

    try:
        config = get_preset(args.preset).with_overrides(
            n_animals=args.animals, trials_per_animal=args.trials, trial_seconds=args.seconds,
            frame_shape=tuple(args.frame_shape) if args.frame_shape else None,
        )
    except ValueError as exc:
        log.error("bad simulation settings", error=str(exc))
        return 2
    out: Path = args.out
    if out.exists() and any(out.glob("*.h5")) and not args.force:
        log.error("output directory already holds trials; pass --force to overwrite", out=str(out))
        return 2
    t0 = time.perf_counter()
    paths = simulate_dataset(config, args.seed, out)
    log.info("simulated", preset=config.name, seed=args.seed, trials=len(paths), out=str(out),
             seconds=round(time.perf_counter() - t0, 1))
    _remove_stale_trials(out, paths)
    if not args.no_figure:
        from tools.simulator.figure import overview_figure

        png = overview_figure(paths, out / "overview.png")
        log.info("figure written", path=str(png))
    return 0
