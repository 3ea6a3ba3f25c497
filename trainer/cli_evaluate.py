"""`actionloop evaluate`: linear-probe evaluation of a checkpoint's frozen embeddings.

    actionloop evaluate --checkpoint CKPT --data DIR --out DIR [--baselines raw_linear cebra]

Writes OUT/report.json (every score, per held-out animal and seed), OUT/report.md (the paper's
Table 1 and 2 layout), OUT/confusion_<method>.png and OUT/embedding_<method>.png.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt written by `actionloop train`")
    parser.add_argument("--data", required=True, help="dataset directory of *.h5 trials (labelled)")
    parser.add_argument("--out", required=True, help="output directory for the report and figures")
    parser.add_argument("--name", default=None, help="row name of the checkpoint (default: its training method)")
    parser.add_argument("--baselines", nargs="*", default=["raw_linear"], choices=["raw_linear", "raw_linear_aligned", "cebra"],
                        help="baselines evaluated beside it on the same windows (default: raw_linear)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="probe seeds (label subsets)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.5, 1.0], help="label fractions")
    parser.add_argument("--block", type=int, default=32, help="windows per label block when subsampling labels")
    parser.add_argument("--projection", choices=["pca", "tsne"], default="tsne", help="2-D projection for the embedding figure")
    parser.add_argument("--cebra-iterations", type=int, default=None, help="CEBRA training iterations (default: the tuned peer's, CEBRA_CONFIGS['cebra'])")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from trainer.data.recording import RecordingError
    from trainer.evaluation.baselines import CEBRA_CONFIGS, cebra_windows, raw_linear_aligned_windows, raw_linear_windows
    from trainer.evaluation.embed import encoder_windows, load_encoder, load_tables
    from trainer.evaluation.suite import ProtocolSettings, evaluate_sets, write_reports
    from trainer.evaluation.windows import EvaluationError

    progress = not args.no_progress
    try:
        settings = ProtocolSettings(fractions=tuple(args.fractions), seeds=tuple(args.seeds), block=args.block)
        if any(not 0 < f <= 1 for f in settings.fractions):
            raise EvaluationError(f"--fractions must lie in (0, 1], got {list(settings.fractions)}")
        model, ckpt = load_encoder(args.checkpoint)
        name = args.name or str(ckpt.get("config", {}).get("method", "checkpoint"))
        started = time.perf_counter()
        sets = {name: encoder_windows(model, args.data, progress=progress)}
        extra: dict[str, object] = {}
        if args.baselines:
            tables = load_tables(args.data, progress=progress)
            if "raw_linear" in args.baselines:
                sets["raw_linear"] = raw_linear_windows(tables, model.window)
            if "raw_linear_aligned" in args.baselines:
                sets["raw_linear_aligned"] = raw_linear_aligned_windows(tables, model.window)
            if "cebra" in args.baselines:
                cs = CEBRA_CONFIGS["cebra"]
                if args.cebra_iterations is not None:
                    cs = replace(cs, max_iterations=args.cebra_iterations)
                sets["cebra"], extra["cebra"] = cebra_windows(tables, model.window, cs, progress=progress)
        results = evaluate_sets(sets, settings, progress=progress)
        meta = {
            "checkpoint": str(Path(args.checkpoint).resolve()), "data": str(Path(args.data).resolve()),
            "method": name, "checkpoint_metrics": _plain(ckpt.get("metrics", {})), "baselines": extra,
            "evaluation_s": time.perf_counter() - started,
        }
        paths = write_reports(args.out, sets, results, settings, meta, figure_methods=(name,),
                              projection=args.projection, title=f"{name} on {Path(args.data).name}")
    except (EvaluationError, RecordingError) as exc:
        log.error("evaluation failed", error=str(exc))
        return 1
    print(Path(paths["markdown"]).read_text())
    for kind, p in paths.items():
        print(f"{kind}: {p}")
    return 0


def _plain(metrics: dict) -> dict:
    """The checkpoint's metrics without its per-epoch history (kept short in the report)."""
    return {k: v for k, v in metrics.items() if k != "history"}
