"""`actionloop train`: train a neural encoder (ours, contrastive_noswap, simclr, regression).

    actionloop train --config tiny --data DIR --out DIR [--set key=value ...] [--resume]

Multi-process (DDP) on CPU or several GPUs:

    torchrun --nproc-per-node 2 -m tools.cli train --config bench --data DIR --out DIR
"""

from __future__ import annotations

import argparse

import structlog

log = structlog.get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny",
                        help="preset name (tiny, bench) or a TOML file (may start with preset = \"...\")")
    parser.add_argument("--data", required=True, help="dataset directory of *.h5 trials")
    parser.add_argument("--out", required=True, help="output directory (checkpoint.pt, state.pt, metrics.json, loss.png)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set method=simclr --set optim.epochs=5 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as TOML-like JSON and exit")


def run(args: argparse.Namespace) -> int:
    import json

    from trainer.config import ConfigError, load_config
    from trainer.data.recording import RecordingError
    from trainer.train import TrainingError, train

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        log.error("bad config", error=str(exc))
        return 2
    if args.print_config:
        print(json.dumps(cfg.model_dump(mode="json"), indent=2))
        return 0
    try:
        result = train(cfg, args.data, args.out, resume=args.resume)
    except (TrainingError, RecordingError, ValueError) as exc:
        log.error("training failed", error=str(exc))
        return 1
    m = result.metrics
    if "final_loss" in m:
        print(f"checkpoint: {result.checkpoint}")
        print(f"method {m['method']}: final loss {m['final_loss']:.4f}, "
              f"{m['train_throughput_windows_per_s']:.0f} windows/s, {m['epoch_time_s']:.1f} s/epoch, "
              f"action head accuracy on training windows {100 * m['head_train_accuracy']:.1f} %")
    return 0
