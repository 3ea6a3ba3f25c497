"""`actionloop bench-train`: the whole method comparison, from one command.

    actionloop bench-train --out bench/train.json [--data DIR] [--preset bench|tiny]

1. Simulates the preset's dataset into the default ``--data`` folder if it holds no trials
   (through `actionloop simulate` in a child process: trainer/ does not import tools/); a
   folder named with ``--data`` is simulated into only with ``--simulate``, otherwise a folder
   without trials is an error (a mistyped path must not become a 2.9 GB simulation).
2. Trains every selected entry of `TRAINED` (the default method and its ablations by default)
   with the trainer's preset (`trainer.train.train`), once per training seed, one after the other;
   the entries of `READINGS` read another entry's checkpoints differently, without training.
3. Evaluates them, the raw-frame baselines and ``cebra`` (also once per training seed) on the
   same windows with the same linear-probe protocol (trainer/evaluation), calibrating every
   animal from its first trial, which is not scored (trainer/evaluation/embed.py).
4. Writes ``--out`` (means over training seeds, with ``seed_sd``, ``train_seeds`` and
   ``default_method``, plus ``train_epoch_s`` and ``settings``), the markdown table next to it
   (``.md``), and ``<out stem>-report/`` with the full report and the confusion/embedding
   figures of the first seed.

Trained checkpoints go to ``--work``/<entry>/seed<k> (default bench/work/runs/<preset>);
``--reuse`` evaluates an existing checkpoint instead of training it again (for a bench cut short).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# Trained entries of the benchmark: name -> (training method, config overrides). The others are
# the default method (`contrastive_noswap` with per-animal normalisation and cross-animal
# positives) with one component removed or added, so the table reads component by component: no
# cross-animal positives, no per-animal normalisation, no augmentations, swapping (`ours`).
TRAINED: dict[str, tuple[str, tuple[str, ...]]] = {
    "contrastive_noswap": ("contrastive_noswap", ()),
    "contrastive_noswap_no_animal_norm": ("contrastive_noswap", ("model.animal_norm=none",)),
    "ours": ("ours", ()),
    "contrastive_noswap_no_cross_animal": ("contrastive_noswap", ("cross_animal.weight=0",)),
    "contrastive_noswap_no_augment": ("contrastive_noswap", ("augment.enabled=false",)),
    "ours_no_animal_norm": ("ours", ("model.animal_norm=none",)),
    "ours_adversarial": ("ours_adversarial", ()),
    "ours_mmd": ("ours_mmd", ()),
    "simclr": ("simclr", ()),
    "regression": ("regression", ()),
}
TRAINED_METHODS = tuple(TRAINED)
# Entries that read another entry's checkpoints differently, without training: name -> the
# trained entry. Without online centring = the calibration's centring alone (trainer/adaptation.py).
READINGS: dict[str, str] = {"contrastive_noswap_no_online_centring": "contrastive_noswap"}
CEBRA_ENTRIES = ("cebra", "cebra_old", "cebra_noncausal")  # trainer.evaluation.baselines.CEBRA_CONFIGS
ALL_METHODS = ("raw_linear", "raw_linear_aligned", *TRAINED_METHODS, *READINGS, *CEBRA_ENTRIES)
# What `make bench-train` compares: the default method, its ablations, the peer and raw frames
# (the other entries, cebra_old among them, are selectable with
# --methods; every entry costs 2-8 min per training seed on 2 cores).
DEFAULT_METHODS = ("raw_linear", "raw_linear_aligned", "contrastive_noswap", "contrastive_noswap_no_cross_animal",
                   "contrastive_noswap_no_animal_norm", "contrastive_noswap_no_augment",
                   "contrastive_noswap_no_online_centring", "ours", "cebra", "cebra_noncausal")
SEEDED = (*TRAINED_METHODS, *READINGS, *CEBRA_ENTRIES)  # entries trained (or read) once per training seed


def default_entry() -> str:
    """The benchmark entry that is what `actionloop train` trains when no method is named."""
    from trainer.config import TrainConfig

    method = TrainConfig().method
    return next(name for name, (m, overrides) in TRAINED.items() if m == method and not overrides)


def seeded_name(method: str, seed: int) -> str:
    return f"{method}@seed{seed}"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="bench/train.json", help="results JSON (the markdown table goes next to it)")
    parser.add_argument("--preset", choices=["bench", "tiny"], default="bench",
                        help="simulator preset and training preset (default: bench)")
    parser.add_argument("--train-config", default=None,
                        help="training preset or TOML for every trained method (default: the same as --preset)")
    parser.add_argument("--data", default=None, help="dataset directory (default: bench/work/data-<preset>, "
                        "simulated there if it holds no trials)")
    parser.add_argument("--simulate", action="store_true",
                        help="simulate the preset into --data if it holds no trials (bench: 2.9 GB)")
    parser.add_argument("--sim-seed", type=int, default=0, help="simulator seed when the dataset is simulated")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(ALL_METHODS),
                        help=f"methods to compare (default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="training seeds: every trained method (and CEBRA) is trained once per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="probe seeds (label subsets)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="training-config override applied to every trained method (repeatable)")
    parser.add_argument("--cebra-iterations", type=int, default=None,
                        help="CEBRA iterations of every CEBRA entry (default: each entry's CEBRA_CONFIGS setting)")
    parser.add_argument("--work", default=None, help="checkpoints folder (default: bench/work/runs/<preset>)")
    parser.add_argument("--reuse", action="store_true", help="evaluate existing checkpoints instead of retraining")
    parser.add_argument("--projection", choices=["pca", "tsne"], default="tsne", help="2-D projection of the figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def ensure_dataset(data: Path, preset: str, seed: int, simulate: bool = True) -> None:
    """Simulate ``preset`` into ``data`` unless it already holds trials; without ``simulate`` a
    folder with no trials is a RecordingError (a user's folder, empty or mistyped)."""
    from trainer.data.recording import RecordingError

    if data.is_dir() and any(data.glob("*.h5")):
        log.info("dataset present", data=str(data), trials=len(list(data.glob("*.h5"))))
        return
    if not simulate:
        state = "is empty of *.h5 trials" if data.is_dir() else "does not exist"
        raise RecordingError(data, f"dataset folder {state}; import recordings there (actionloop import), "
                                   f"or pass --simulate to simulate the {preset} preset into it")
    log.info("simulating dataset", preset=preset, seed=seed, data=str(data))
    cmd = [sys.executable, "-m", "tools.cli", "simulate", "--preset", preset, "--seed", str(seed), "--out", str(data)]
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"simulation failed (exit {done.returncode}): {' '.join(cmd)}")


def dataset_summary(data: Path) -> dict[str, Any]:
    from trainer.data.recording import list_trials, open_trial

    animals: set[str] = set()
    sources: set[str] = set()
    trials = frames = labelled = 0
    shape: tuple[int, int] | None = None
    rate = seconds = 0.0
    for path in list_trials(data):
        with open_trial(path) as t:
            animals.add(t.animal_id)
            sources.add(f"simulated {t.attrs['preset']} preset"
                        if t.attrs.get("source") == "simulator" and t.attrs.get("preset") else "")
            trials += 1
            frames += t.n_neural
            labelled += int((t.neural_labels() >= 0).sum())
            shape, rate = t.frame_shape, t.neural_rate_hz
            seconds += float(t.neural_times[-1] - t.neural_times[0])
    # Named after where it came from: the simulator preset, else the folder (imported data is no preset).
    name = sources.pop() if len(sources) == 1 and "" not in sources else f"dataset {data.resolve().name or data}"
    return {
        "path": str(data), "name": name, "animals": len(animals), "trials": trials, "frames": frames,
        "labelled_frames": labelled, "frame_shape": list(shape or ()), "neural_rate_hz": rate,
        "recorded_s": round(seconds, 1),
    }


def table_title(dataset: dict[str, Any], train_config: str, seeds: list[int]) -> str:
    return (f"Trainer benchmark ({dataset['name']}: {dataset['animals']} animals, {dataset['trials']} trials, "
            f"{dataset['frames']} frames; training config {train_config}; training seeds {seeds})")


def run(args: argparse.Namespace) -> int:
    from trainer.config import ConfigError
    from trainer.data.recording import RecordingError
    from trainer.evaluation.report import (
        bench_json,
        markdown_tables,
        projection_identity_table,
        seed_statistics,
        standardisation_table,
        write_json_atomic,
        write_text_atomic,
    )
    from trainer.evaluation.suite import ProtocolSettings, evaluate_sets, write_reports
    from trainer.evaluation.windows import EvaluationError, standardised_per_animal
    from trainer.train import TrainingError

    started = time.perf_counter()
    progress = not args.no_progress
    out = Path(args.out)
    data = Path(args.data or f"bench/work/data-{args.preset}")
    work = Path(args.work or f"bench/work/runs/{args.preset}")
    report_dir = out.with_name(f"{out.stem}-report")
    settings = ProtocolSettings(seeds=tuple(args.seeds))
    # where identity lives (report.standardisation_table): 100 % labels, one probe seed, first training seed
    diagnostic = ProtocolSettings(fractions=(1.0,), seeds=(0,), protocols=("multi_animal", "identity"))
    train_config = args.train_config or args.preset
    seeds = list(dict.fromkeys(args.train_seeds))
    timings: dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        ensure_dataset(data, args.preset, args.sim_seed, simulate=args.data is None or args.simulate)
        timings["simulate_s"] = time.perf_counter() - t0
        dataset = dataset_summary(data)
        trained = _train_entries(args, data, work, train_config, seeds, progress)
        sets, extra_info = _window_sets(args, data, trained, seeds, train_config, progress)
        t0 = time.perf_counter()
        results = evaluate_sets(sets, settings, progress=progress)
        timings["evaluate_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        first = {m: sets[seeded_name(m, seeds[0])] if m in SEEDED else sets[m] for m in args.methods}
        standardised = evaluate_sets({m: standardised_per_animal(ws) for m, ws in first.items()},
                                     diagnostic, progress=progress)
        timings["diagnostic_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        projection_identity = _projection_identity(trained, sets, seeds, progress)
        timings["projection_identity_s"] = time.perf_counter() - t0
    except (ConfigError, TrainingError, EvaluationError, RecordingError, RuntimeError) as exc:
        log.error("bench-train failed", error=str(exc))
        return 1
    timings["train_s"] = {m: t.seconds for m, t in trained.items()}
    timings["total_s"] = time.perf_counter() - started
    methods = [m for m in ALL_METHODS if m in args.methods]
    per_seed = {m: [results[seeded_name(m, k)] for k in seeds] if m in SEEDED else [results[m]] for m in methods}
    summaries, seed_sd = seed_statistics({m: [r.summary()["accuracy"] for r in rs] for m, rs in per_seed.items()})
    chance = next(iter(results.values())).summary()["chance"]
    throughput = {m: trained[m].throughput if m in trained else extra_info.get(m, {}).get("train_samples_per_s")
                  for m in methods}
    epoch_s = {m: trained[m].epoch_s if m in trained else None for m in methods}
    meta = {"preset": args.preset, "train_config": train_config, "train_seeds": seeds, "overrides": args.overrides,
            "entries": {**{m: {"method": TRAINED[m][0], "overrides": list(TRAINED[m][1])} for m in methods if m in TRAINED},
                        **{m: {"reads": READINGS[m], "online_centring": False} for m in methods if m in READINGS}},
            "timings": timings, "baselines": extra_info, "command": " ".join(["actionloop", *sys.argv[1:]])}
    figure_methods = tuple(m for m in (default_entry(), "raw_linear", "cebra") if m in first)
    write_reports(report_dir, first, {m: per_seed[m][0] for m in methods}, settings, meta,
                  figure_methods=figure_methods, projection=args.projection,
                  title=f"bench-train, {dataset['name']}, first training seed ({seeds[0]})")
    standardised_summaries = {m: r.summary()["accuracy"] for m, r in standardised.items()}
    payload = bench_json(dataset, chance, summaries, throughput, extra={
        "default_method": default_entry(),
        "train_seeds": seeds,
        "seed_sd": seed_sd,
        "train_epoch_s": epoch_s,
        "identity_projection": projection_identity,
        "per_animal_standardised": {
            proto: {m: acc[proto]["1.0"]["mean"] for m, acc in standardised_summaries.items()}
            for proto in diagnostic.protocols
        },
        "settings": {**meta, "protocol": {"fractions": list(settings.fractions), "seeds": list(settings.seeds),
                                          "block": settings.block, "probe_c": settings.probe_c,
                                          "calibration": "each animal's first trial, not scored"},
                     "window": next(iter(sets.values())).window, "report": str(report_dir)},
    })
    write_json_atomic(out, payload)
    table = markdown_tables(summaries, chance, seed_sd=seed_sd, title=table_title(dataset, train_config, seeds))
    thr = "\n".join(
        f"| {m} | {throughput[m]:.0f} | {epoch_s[m]:.1f} |" if throughput.get(m) and epoch_s.get(m) else
        f"| {m} | {throughput[m]:.0f} (frames/s) | – |" if throughput.get(m) else f"| {m} | – | – |"
        for m in methods
    )
    table += f"\n**Training throughput** (mean over training seeds)\n\n| Method | windows/s | s/epoch |\n|---|---|---|\n{thr}\n"
    first_summaries = {m: per_seed[m][0].summary()["accuracy"] for m in methods}
    table += "\n" + standardisation_table(first_summaries, standardised_summaries)
    table += "\n" + projection_identity_table(projection_identity, chance["identity"]["1.0"]["mean"])
    table += f"\nWhole run: {timings['total_s'] / 60:.1f} min. Command: `{meta['command']}`\n"
    write_text_atomic(out.with_suffix(".md"), table)
    print(table)
    print(f"results: {out}  table: {out.with_suffix('.md')}  report: {report_dir}")
    return 0


def _projection_identity(trained: dict[str, _Trained], sets: dict[str, Any], seeds: list[int],
                         progress: bool) -> dict[str, dict[str, float]]:
    """Identity at 100 % labels measured on the contrastive projection of each trained entry's
    embedding (as deployed: calibrated, centred), per training seed: mean and sd over seeds."""
    from statistics import mean, stdev

    from trainer.evaluation.embed import projected
    from trainer.evaluation.suite import ProtocolSettings, evaluate_sets

    identity_only = ProtocolSettings(fractions=(1.0,), seeds=(0,), protocols=("identity",))
    out: dict[str, dict[str, float]] = {}
    for name, t in trained.items():
        if seeded_name(name, seeds[0]) not in sets:
            continue  # trained only to be read by another entry
        if any(t.projections.get(k) is None for k in seeds):
            continue  # no projection head (or an older checkpoint without it)
        runs = evaluate_sets({seeded_name(name, k): projected(sets[seeded_name(name, k)], t.projections[k])
                              for k in seeds}, identity_only, progress=progress)
        values = [r.summary()["accuracy"]["identity"]["1.0"]["mean"] for r in runs.values()]
        out[name] = {"mean": mean(values), "seed_sd": stdev(values) if len(values) > 1 else 0.0}
    return out


@dataclass
class _Trained:
    seconds: float
    throughput: float | None
    epoch_s: float | None
    encoders: dict[int, Any]  # training seed -> encoder (eval mode, its checkpoint's calibration)
    projections: dict[int, Any]  # training seed -> the loss's projection head (None: the method has none)


def _train_entries(args: argparse.Namespace, data: Path, work: Path, train_config: str, seeds: list[int],
                   progress: bool) -> dict[str, _Trained]:
    """Train (or with --reuse load) every selected trained entry once per training seed."""
    from statistics import mean

    from trainer.config import load_config
    from trainer.evaluation.embed import load_encoder, load_projection
    from trainer.train import CHECKPOINT, train

    out: dict[str, _Trained] = {}
    wanted = set(args.methods) | {READINGS[m] for m in args.methods if m in READINGS}
    for name in [m for m in TRAINED_METHODS if m in wanted]:
        method, entry_overrides = TRAINED[name]
        t0 = time.perf_counter()
        encoders, projections, throughputs, epochs = {}, {}, [], []
        for seed in seeds:
            # Pooled frames are cached once in the work folder and shared by every run.
            cfg = load_config(train_config, [f"method={method}", f"seed={seed}",
                                            f"progress={'true' if progress else 'false'}",
                                            f"data.cache_dir={work / 'cache'}", *entry_overrides, *args.overrides])
            run_dir = work / name / f"seed{seed}"
            if not (args.reuse and (run_dir / CHECKPOINT).is_file()):
                log.info("training", entry=name, method=method, seed=seed, out=str(run_dir))
                train(cfg, data, run_dir)
            else:
                log.info("reusing checkpoint", entry=name, seed=seed, path=str(run_dir / CHECKPOINT))
            encoder, ckpt = load_encoder(run_dir / CHECKPOINT)  # as evaluated later: weights and calibration
            metrics = ckpt.get("metrics", {})
            encoders[seed] = encoder
            projections[seed] = load_projection(ckpt)
            if metrics.get("train_throughput_windows_per_s"):
                throughputs.append(metrics["train_throughput_windows_per_s"])
                epochs.append(metrics["epoch_time_s"])
        out[name] = _Trained(time.perf_counter() - t0, mean(throughputs) if throughputs else None,
                             mean(epochs) if epochs else None, encoders, projections)
    return out


def _window_sets(args: argparse.Namespace, data: Path, trained: dict[str, _Trained], seeds: list[int],
                 train_config: str, progress: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every method's window set (trained entries and CEBRA once per seed, as `name@seedK`)."""
    from trainer.config import load_config
    from trainer.evaluation.baselines import raw_linear_aligned_windows, raw_linear_windows
    from trainer.evaluation.embed import encoders_windows, load_tables, online_centred

    sets: dict[str, Any] = {}
    encoders = {seeded_name(m, k): enc for m, t in trained.items() for k, enc in t.encoders.items()}
    if encoders:
        # calibration-centred windows once; the online centring (as deployed) applied after, so
        # the readings without it cost no second pass over the frames
        calibration_only = encoders_windows(encoders, data, progress=progress, online_centring=False)
        for m in [m for m in args.methods if m in trained]:
            for k, enc in trained[m].encoders.items():
                ws = calibration_only[seeded_name(m, k)]
                centring = getattr(enc, "online_centring", None)
                sets[seeded_name(m, k)] = online_centred(ws, centring) if centring is not None else ws
        for m in [m for m in args.methods if m in READINGS]:
            for k in trained[READINGS[m]].encoders:
                sets[seeded_name(m, k)] = calibration_only[seeded_name(READINGS[m], k)]
    window = next((e.window for e in encoders.values()), None) or load_config(train_config).model.window
    info: dict[str, Any] = {}
    if {"raw_linear", "raw_linear_aligned", *CEBRA_ENTRIES} & set(args.methods):
        tables = load_tables(data, progress=progress)
        if "raw_linear" in args.methods:
            sets["raw_linear"] = raw_linear_windows(tables, window)
        if "raw_linear_aligned" in args.methods:
            sets["raw_linear_aligned"] = raw_linear_aligned_windows(tables, window)
        info.update(_cebra_sets(args, tables, window, seeds, sets, progress))
    return sets, info


def _cebra_sets(args: argparse.Namespace, tables: list[Any], window: int, seeds: list[int], sets: dict[str, Any],
                progress: bool) -> dict[str, Any]:
    """The selected CEBRA entries, once per training seed, into `sets`; entries that differ only
    in how the embedding is read (causal or not) share one fit. Returns their report facts."""
    from trainer.evaluation.baselines import CEBRA_CONFIGS, causal_shift, cebra_embeddings, cebra_readout

    wanted = [m for m in CEBRA_ENTRIES if m in args.methods]
    fits: dict[Any, list[str]] = {}
    for name in wanted:
        cs = replace(CEBRA_CONFIGS[name], causal=True)
        if args.cebra_iterations is not None:
            cs = replace(cs, max_iterations=args.cebra_iterations)
        fits.setdefault(cs, []).append(name)
    info: dict[str, Any] = {}
    for cs, names in fits.items():
        runs = {}
        for seed in seeds:
            per_frame, runs[seed] = cebra_embeddings(tables, cs, seed=seed, progress=progress)
            for name in names:
                shift = causal_shift(cs) if CEBRA_CONFIGS[name].causal else 0
                sets[seeded_name(name, seed)] = cebra_readout(tables, per_frame, window, shift)
        for name in names:
            info[name] = {"settings": {**runs[seeds[0]]["settings"], "causal": CEBRA_CONFIGS[name].causal},
                          "causal_shift_frames": causal_shift(cs) if CEBRA_CONFIGS[name].causal else 0,
                          "fit_s": {k: r["fit_s"] for k, r in runs.items()}, "shares_fit_with": names,
                          "train_samples_per_s": sum(r["train_samples_per_s"] for r in runs.values()) / len(runs)}
    return info
