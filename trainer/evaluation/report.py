"""Reports: the JSON of one evaluation, the benchmark's `train.json`, and markdown tables.

Tables follow the paper's layout: Table 1 is action recognition (single-animal and multi-animal,
50 % and 100 % of the labels), Table 2 is identity recognition; one row per method, cells
``mean ± spread`` in percent, spread = standard deviation over held-out animals (or folds) and
seeds.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainer.evaluation.protocol import PROTOCOLS

# Row order of the tables; other method names follow in the order given.
METHOD_ORDER = ("raw_linear", "raw_linear_aligned", "simclr", "regression", "cebra_old", "cebra_noncausal", "cebra",
                "contrastive_noswap_no_animal_norm", "contrastive_noswap_no_augment", "contrastive_noswap_no_online_centring",
                "ours_no_animal_norm", "ours",
                "ours_adversarial", "ours_mmd", "contrastive_noswap_no_cross_animal", "contrastive_noswap")
METHOD_TITLES = {
    "raw_linear": "Linear on raw frames",
    "raw_linear_aligned": "Linear on raw frames, session-calibrated",
    "simclr": "SimCLR (neural only)",
    "regression": "Regression to pose",
    "contrastive_noswap": "Pose-guided contrastive + per-animal normalisation + cross-animal positives (default)",
    "contrastive_noswap_no_animal_norm": "Default without per-animal normalisation",
    "contrastive_noswap_no_cross_animal": "Default without cross-animal positives (earlier default)",
    "contrastive_noswap_no_augment": "Default without augmentations",
    "contrastive_noswap_no_online_centring": "Default without online centring (calibration mean only)",
    "ours_no_animal_norm": "Swapping, without per-animal normalisation (earlier default)",
    "cebra": "CEBRA (multi-session, pose), tuned, causal",
    "cebra_old": "CEBRA, earlier configuration (causal)",
    "cebra_noncausal": "CEBRA tuned, non-causal (sees 4 later frames; reference only)",
    "ours": "Default + cross-animal swapping",
    "ours_adversarial": "Ours + gradient-reversal animal adversary",
    "ours_mmd": "Ours + MMD between animals",
}
FRACTIONS = ("0.5", "1.0")

Summary = Mapping[str, Mapping[str, Mapping[str, float]]]  # protocol -> fraction -> mean/std/n


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write JSON to a temporary name in the same folder, then rename: never a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; results are for everyone on the rig
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def ordered_methods(methods: Sequence[str]) -> list[str]:
    known = [m for m in METHOD_ORDER if m in methods]
    return known + [m for m in methods if m not in METHOD_ORDER]


def seed_statistics(per_seed: Mapping[str, Sequence[Summary]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per method, summaries of several training seeds -> (summary of their means: "mean" = mean
    over seeds, "std" = mean over seeds of the spread over held-out units; seed_sd[protocol]
    [method][fraction] = sample standard deviation over seeds, 0 for a single seed)."""
    import numpy as np

    summaries: dict[str, Any] = {}
    seed_sd: dict[str, Any] = {proto: {} for proto in PROTOCOLS}
    for method, runs in per_seed.items():
        out: dict[str, Any] = {}
        for proto in PROTOCOLS:
            for frac in runs[0].get(proto, {}):
                means = np.array([r[proto][frac]["mean"] for r in runs])
                out.setdefault(proto, {})[frac] = {
                    "mean": float(means.mean()), "std": float(np.mean([r[proto][frac]["std"] for r in runs])),
                    "n": int(sum(r[proto][frac]["n"] for r in runs)), "seeds": len(runs)}
                seed_sd[proto].setdefault(method, {})[frac] = float(means.std(ddof=1)) if len(runs) > 1 else 0.0
        summaries[method] = out
    return summaries, seed_sd


def _cell(summary: Summary, protocol: str, fraction: str, bold: bool = False,
          seed_sd: Mapping[str, Any] | None = None, method: str = "") -> str:
    entry = summary.get(protocol, {}).get(fraction)
    if entry is None:
        return "–"
    text = f"{entry['mean']:.1f} ± {entry['std']:.1f}"
    if seed_sd is not None and entry.get("seeds", 1) > 1:
        text = f"{entry['mean']:.1f} ± {seed_sd[protocol][method][fraction]:.1f} ({entry['std']:.1f})"
    return f"**{text}**" if bold else text


def markdown_tables(summaries: Mapping[str, Summary], chance: Summary, title: str = "",
                    seed_sd: Mapping[str, Any] | None = None) -> str:
    """Table 1 (actions) and Table 2 (identity) for every method, best action score in bold;
    with `seed_sd`, cells of methods trained with several seeds read mean ± sd over seeds
    (spread over held-out units)."""
    methods = ordered_methods(list(summaries))
    best: dict[tuple[str, str], float] = {}
    for proto in ("single_animal", "multi_animal"):
        for frac in FRACTIONS:
            vals = [summaries[m][proto][frac]["mean"] for m in methods if frac in summaries[m].get(proto, {})]
            if vals:
                best[(proto, frac)] = max(vals)
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += [
        "**Table 1: action recognition accuracy (%) of a linear probe on frozen embeddings**",
        "",
        "| Method | Single-animal 50 % | Single-animal 100 % | Multi-animal 50 % | Multi-animal 100 % |",
        "|---|---|---|---|---|",
    ]
    for m in methods:
        cells = [
            _cell(summaries[m], p, f, bold=summaries[m].get(p, {}).get(f, {}).get("mean") == best.get((p, f)),
                  seed_sd=seed_sd, method=m)
            for p in ("single_animal", "multi_animal") for f in FRACTIONS
        ]
        lines.append(f"| {METHOD_TITLES.get(m, m)} | " + " | ".join(cells) + " |")
    lines.append("| *Chance (most frequent class)* | " + " | ".join(
        _cell(chance, p, f) for p in ("single_animal", "multi_animal") for f in FRACTIONS) + " |")
    lines += [
        "",
        "**Table 2: identity recognition accuracy (%) (lower is better: the embedding should not tell animals apart)**",
        "",
        "| Method | Identity 50 % | Identity 100 % |",
        "|---|---|---|",
    ]
    for m in methods:
        lines.append(f"| {METHOD_TITLES.get(m, m)} | " + " | ".join(
            _cell(summaries[m], "identity", f, seed_sd=seed_sd, method=m) for f in FRACTIONS) + " |")
    lines.append("| *Chance (most frequent animal)* | " + " | ".join(_cell(chance, "identity", f) for f in FRACTIONS) + " |")
    lines += [
        "",
        "Trained methods: mean over training seeds ± standard deviation over training seeds (in "
        "brackets: the spread over held-out animals, animals or trial folds and probe seeds). "
        "Untrained baselines: mean ± that spread. 50 % = half of the training windows, kept as "
        "contiguous blocks. Every animal is calibrated from its first trial, which is not scored.",
        "",
    ]
    return "\n".join(lines)


def standardisation_table(plain: Mapping[str, Summary], standardised: Mapping[str, Summary]) -> str:
    """Diagnostic table: multi-animal action and identity accuracy at 100 % labels, as benchmarked
    and after standardising each animal's features with its own statistics
    (`trainer.evaluation.windows.standardised_per_animal`)."""
    lines = [
        "**Diagnostic: where identity lives.** The same probes after each animal's features are "
        "z-scored with that animal's own mean and std (no labels; transductive, so not the "
        "benchmark protocol). Identity that vanishes here is a per-animal offset/scale of the "
        "features; identity that stays is entangled with what the features encode.",
        "",
        "| Method | Multi-animal 100 % | … standardised | Identity 100 % | … standardised |",
        "|---|---|---|---|---|",
    ]
    for m in ordered_methods([m for m in standardised if m in plain]):
        cells = [_cell(summary, proto, "1.0") for proto in ("multi_animal", "identity")
                 for summary in (plain[m], standardised[m])]
        lines.append(f"| {METHOD_TITLES.get(m, m)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def projection_identity_table(identity: Mapping[str, Mapping[str, float]], chance: float) -> str:
    """Identity of the embedding's contrastive projection (where the loss works), beside chance."""
    if not identity:
        return ""
    lines = [
        "**Identity on the contrastive projection** (100 % labels; the deployed, calibrated embedding "
        f"through the loss's projection head; mean ± sd over training seeds; chance {chance:.1f} %)",
        "",
        "| Method | Identity 100 %, projection |",
        "|---|---|",
    ]
    for m in ordered_methods(list(identity)):
        lines.append(f"| {METHOD_TITLES.get(m, m)} | {identity[m]['mean']:.1f} ± {identity[m]['seed_sd']:.1f} |")
    return "\n".join(lines) + "\n"


def bench_json(
    dataset: Mapping[str, Any],
    chance: Summary,
    summaries: Mapping[str, Summary],
    throughput: Mapping[str, float | None],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`bench/train.json` in the issue's shape: accuracies in percent, spread = std, same shape."""
    methods = ordered_methods(list(summaries))
    out: dict[str, Any] = {
        "dataset": dict(dataset),
        "chance": {
            "action": chance["multi_animal"]["1.0"]["mean"],
            "identity": chance["identity"]["1.0"]["mean"],
        },
    }
    for proto in ("multi_animal", "single_animal", "identity"):
        out[proto] = {m: {f: summaries[m][proto][f]["mean"] for f in FRACTIONS if f in summaries[m].get(proto, {})} for m in methods}
    out["spread"] = {
        proto: {m: {f: summaries[m][proto][f]["std"] for f in FRACTIONS if f in summaries[m].get(proto, {})} for m in methods}
        for proto in PROTOCOLS
    }
    out["train_throughput_windows_per_s"] = {m: throughput.get(m) for m in methods}
    if extra:
        out.update(extra)
    return out
