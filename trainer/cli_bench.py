"""`actionloop bench-train`: the whole method comparison, from one command.

    actionloop bench-train --out bench/train.json [--data DIR] [--preset bench|tiny]

1. Simulates the preset's dataset into ``--data`` if that folder holds no trials (through
   `actionloop simulate` in a child process: trainer/ does not import tools/).
2. Trains every method (``ours``, ``ours_adversarial``, ``ours_mmd``, ``contrastive_noswap``, ``simclr``, ``regression``) with the
   trainer's own preset of the same name (`trainer.train.train`), one after the other.
3. Evaluates them, ``raw_linear`` and ``cebra`` on the same windows with the same linear-probe
   protocol (trainer/evaluation).
4. Writes ``--out`` (the issue's JSON shape, plus ``train_epoch_s`` and ``settings``), the
   markdown table next to it (``.md``), and ``<out stem>-report/`` with the full report and the
   confusion/embedding figures.

Trained checkpoints go to ``--work`` (default bench/work/runs/<preset>); ``--reuse`` evaluates an
existing checkpoint of a method instead of training it again (for a bench cut short).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

TRAINED_METHODS = ("ours", "ours_adversarial", "ours_mmd", "contrastive_noswap", "simclr", "regression")
ALL_METHODS = ("raw_linear", "raw_linear_aligned", *TRAINED_METHODS, "cebra")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="bench/train.json", help="results JSON (the markdown table goes next to it)")
    parser.add_argument("--preset", choices=["bench", "tiny"], default="bench",
                        help="simulator preset and training preset (default: bench)")
    parser.add_argument("--train-config", default=None,
                        help="training preset or TOML for every trained method (default: the same as --preset)")
    parser.add_argument("--data", default=None, help="dataset directory; simulated there if it holds no trials "
                        "(default: bench/work/data-<preset>)")
    parser.add_argument("--sim-seed", type=int, default=0, help="simulator seed when the dataset is simulated")
    parser.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=list(ALL_METHODS),
                        help="methods to compare (default: all)")
    parser.add_argument("--train-seed", type=int, default=0, help="training seed of every trained method")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="probe seeds (label subsets)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="training-config override applied to every trained method (repeatable)")
    parser.add_argument("--cebra-iterations", type=int, default=None, help="CEBRA iterations (default: CebraSettings)")
    parser.add_argument("--work", default=None, help="checkpoints folder (default: bench/work/runs/<preset>)")
    parser.add_argument("--reuse", action="store_true", help="evaluate existing checkpoints instead of retraining")
    parser.add_argument("--projection", choices=["pca", "tsne"], default="tsne", help="2-D projection of the figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def ensure_dataset(data: Path, preset: str, seed: int) -> None:
    """Simulate ``preset`` into ``data`` unless it already holds trials."""
    if data.is_dir() and any(data.glob("*.h5")):
        log.info("dataset present", data=str(data), trials=len(list(data.glob("*.h5"))))
        return
    log.info("simulating dataset", preset=preset, seed=seed, data=str(data))
    cmd = [sys.executable, "-m", "tools.cli", "simulate", "--preset", preset, "--seed", str(seed), "--out", str(data)]
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"simulation failed (exit {done.returncode}): {' '.join(cmd)}")


def dataset_summary(data: Path) -> dict[str, Any]:
    from trainer.data.recording import list_trials, open_trial

    animals: set[str] = set()
    trials = frames = labelled = 0
    shape: tuple[int, int] | None = None
    rate = seconds = 0.0
    for path in list_trials(data):
        with open_trial(path) as t:
            animals.add(t.animal_id)
            trials += 1
            frames += t.n_neural
            labelled += int((t.neural_labels() >= 0).sum())
            shape, rate = t.frame_shape, t.neural_rate_hz
            seconds += float(t.neural_times[-1] - t.neural_times[0])
    return {
        "path": str(data), "animals": len(animals), "trials": trials, "frames": frames,
        "labelled_frames": labelled, "frame_shape": list(shape or ()), "neural_rate_hz": rate,
        "recorded_s": round(seconds, 1),
    }


def run(args: argparse.Namespace) -> int:
    from trainer.config import ConfigError, load_config
    from trainer.data.recording import RecordingError
    from trainer.evaluation.baselines import (
        CebraSettings,
        cebra_windows,
        raw_linear_aligned_windows,
        raw_linear_windows,
    )
    from trainer.evaluation.embed import encoders_windows, load_encoder, load_tables
    from trainer.evaluation.report import (
        bench_json,
        markdown_tables,
        standardisation_table,
        write_json_atomic,
        write_text_atomic,
    )
    from trainer.evaluation.suite import ProtocolSettings, evaluate_sets, write_reports
    from trainer.evaluation.windows import EvaluationError, standardised_per_animal
    from trainer.train import CHECKPOINT, TrainingError, train

    started = time.perf_counter()
    progress = not args.no_progress
    out = Path(args.out)
    data = Path(args.data or f"bench/work/data-{args.preset}")
    work = Path(args.work or f"bench/work/runs/{args.preset}")
    report_dir = out.with_name(f"{out.stem}-report")
    settings = ProtocolSettings(seeds=tuple(args.seeds))
    # where identity lives (report.standardisation_table): 100 % labels, one seed
    diagnostic = ProtocolSettings(fractions=(1.0,), seeds=(0,), protocols=("multi_animal", "identity"))
    train_config = args.train_config or args.preset
    timings: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        ensure_dataset(data, args.preset, args.sim_seed)
        timings["simulate_s"] = time.perf_counter() - t0
        dataset = dataset_summary(data)
        sets = {}
        throughput: dict[str, float | None] = {}
        epoch_s: dict[str, float | None] = {}
        train_s: dict[str, float] = {}
        window = None
        encoders = {}
        for method in [m for m in TRAINED_METHODS if m in args.methods]:
            # Pooled frames are cached once in the work folder and shared by every method's run.
            cfg = load_config(train_config, [f"method={method}", f"seed={args.train_seed}",
                                            f"progress={'true' if progress else 'false'}",
                                            f"data.cache_dir={work / 'cache'}", *args.overrides])
            ckpt_path = work / method / CHECKPOINT
            t0 = time.perf_counter()
            if args.reuse and ckpt_path.is_file():
                log.info("reusing checkpoint", method=method, path=str(ckpt_path))
                encoder, ckpt = load_encoder(ckpt_path)
                metrics = ckpt.get("metrics", {})
            else:
                log.info("training", method=method, preset=args.preset, out=str(work / method))
                train(cfg, data, work / method)
                encoder, ckpt = load_encoder(ckpt_path)  # as evaluated later: weights and calibration
                metrics = ckpt.get("metrics", {})
            train_s[method] = time.perf_counter() - t0
            throughput[method] = metrics.get("train_throughput_windows_per_s")
            epoch_s[method] = metrics.get("epoch_time_s")
            window = encoder.window
            encoders[method] = encoder
        if encoders:
            sets.update(encoders_windows(encoders, data, progress=progress))
        window = window or load_config(train_config).model.window
        extra_info: dict[str, Any] = {}
        if {"raw_linear", "raw_linear_aligned", "cebra"} & set(args.methods):
            tables = load_tables(data, progress=progress)
            if "raw_linear" in args.methods:
                sets["raw_linear"] = raw_linear_windows(tables, window)
                throughput["raw_linear"], epoch_s["raw_linear"] = None, None  # nothing is trained
            if "raw_linear_aligned" in args.methods:
                sets["raw_linear_aligned"] = raw_linear_aligned_windows(tables, window)
                throughput["raw_linear_aligned"], epoch_s["raw_linear_aligned"] = None, None
            if "cebra" in args.methods:
                cs = CebraSettings() if args.cebra_iterations is None else CebraSettings(max_iterations=args.cebra_iterations)
                sets["cebra"], info = cebra_windows(tables, window, cs, seed=args.train_seed, progress=progress)
                extra_info["cebra"] = info
                # CEBRA's samples are single frames (its model sees a 10-frame context around each).
                throughput["cebra"], epoch_s["cebra"] = info["train_samples_per_s"], None
                train_s["cebra"] = info["fit_s"]
        t0 = time.perf_counter()
        results = evaluate_sets(sets, settings, progress=progress)
        timings["evaluate_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        standardised = evaluate_sets({m: standardised_per_animal(ws) for m, ws in sets.items()},
                                     diagnostic, progress=progress)
        timings["diagnostic_s"] = time.perf_counter() - t0
    except (ConfigError, TrainingError, EvaluationError, RecordingError, RuntimeError) as exc:
        log.error("bench-train failed", error=str(exc))
        return 1
    timings["train_s"] = train_s  # type: ignore[assignment]
    timings["total_s"] = time.perf_counter() - started
    summaries = {m: r.summary()["accuracy"] for m, r in results.items()}
    chance = next(iter(results.values())).summary()["chance"]
    meta = {"preset": args.preset, "train_config": train_config, "train_seed": args.train_seed, "overrides": args.overrides, "timings": timings,
            "baselines": extra_info, "command": " ".join(["actionloop", *sys.argv[1:]])}
    figure_methods = tuple(m for m in ("ours", "raw_linear", "cebra") if m in sets)
    write_reports(report_dir, sets, results, settings, meta, figure_methods=figure_methods,
                  projection=args.projection, title=f"bench-train, preset {args.preset}")
    standardised_summaries = {m: r.summary()["accuracy"] for m, r in standardised.items()}
    payload = bench_json(dataset, chance, summaries, throughput, extra={
        "train_epoch_s": {m: epoch_s.get(m) for m in summaries},
        "per_animal_standardised": {
            proto: {m: acc[proto]["1.0"]["mean"] for m, acc in standardised_summaries.items()}
            for proto in diagnostic.protocols
        },
        "settings": {**meta, "protocol": {"fractions": list(settings.fractions), "seeds": list(settings.seeds),
                                          "block": settings.block, "probe_c": settings.probe_c},
                     "window": window, "report": str(report_dir)},
    })
    write_json_atomic(out, payload)
    table = markdown_tables(summaries, chance, title=f"Trainer benchmark ({args.preset} preset: "
                            f"{dataset['animals']} animals, {dataset['trials']} trials, {dataset['frames']} frames; "
                            f"training config {train_config})")
    thr = "\n".join(
        f"| {m} | {throughput[m]:.0f} | {epoch_s[m]:.1f} |" if throughput.get(m) and epoch_s.get(m) else
        f"| {m} | {throughput[m]:.0f} (frames/s) | – |" if throughput.get(m) else f"| {m} | – | – |"
        for m in summaries
    )
    table += f"\n**Training throughput**\n\n| Method | windows/s | s/epoch |\n|---|---|---|\n{thr}\n"
    table += "\n" + standardisation_table(summaries, standardised_summaries)
    table += f"\nWhole run: {timings['total_s'] / 60:.1f} min. Command: `{meta['command']}`\n"
    write_text_atomic(out.with_suffix(".md"), table)
    print(table)
    print(f"results: {out}  table: {out.with_suffix('.md')}  report: {report_dir}")
    return 0
