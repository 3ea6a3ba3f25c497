"""Evaluate several methods' window sets with one protocol and write the report files.

Shared by `actionloop evaluate` (one checkpoint, optional baselines) and `actionloop bench-train`
(every method), so both report exactly the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog
from tqdm import tqdm

from trainer.evaluation.figures import confusion_png, embedding_png
from trainer.evaluation.protocol import PROTOCOLS, ProtocolResult, run_protocols
from trainer.evaluation.report import markdown_tables, write_json_atomic, write_text_atomic
from trainer.evaluation.windows import WindowSet

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ProtocolSettings:
    fractions: tuple[float, ...] = (0.5, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    block: int = 32
    probe_c: float = 1.0
    protocols: tuple[str, ...] = field(default=PROTOCOLS)


def evaluate_sets(
    sets: Mapping[str, WindowSet], settings: ProtocolSettings = ProtocolSettings(), progress: bool = True,
) -> dict[str, ProtocolResult]:
    """Run the protocols on every method's windows; a bar counts protocol x fraction x seed runs."""
    runs_per_method = sum(len(settings.seeds) if f < 1.0 else 1 for f in settings.fractions) * len(settings.protocols)
    results: dict[str, ProtocolResult] = {}
    with tqdm(total=runs_per_method * len(sets), desc="linear probes", unit="run", disable=not progress) as bar:
        for name, ws in sets.items():
            def tick(what: str, name: str = name) -> None:
                bar.set_postfix_str(f"{name} {what}")
                bar.update(1)

            results[name] = run_protocols(
                ws, fractions=settings.fractions, seeds=settings.seeds, protocols=settings.protocols,
                block=settings.block, probe_c=settings.probe_c, progress=tick,
            )
            acc = results[name].summary()["accuracy"]
            log.info("evaluated", method=name, **{
                f"{p}_{f}": round(v["mean"], 1) for p, fr in acc.items() for f, v in fr.items()
            })
    return results


def write_reports(
    out_dir: str | Path,
    sets: Mapping[str, WindowSet],
    results: Mapping[str, ProtocolResult],
    settings: ProtocolSettings,
    meta: Mapping[str, Any],
    figure_methods: tuple[str, ...] = (),
    projection: str = "pca",
    title: str = "",
) -> dict[str, Path]:
    """report.json, report.md, and per method in ``figure_methods``: confusion and embedding PNGs."""
    out = Path(out_dir)
    summaries = {m: r.summary()["accuracy"] for m, r in results.items()}
    chance = next(iter(results.values())).summary()["chance"]
    report = {
        **meta,
        "protocol": asdict(settings),
        "windows": {m: ws.summary() for m, ws in sets.items()},
        "chance": chance,
        "methods": {m: r.to_json() for m, r in results.items()},
    }
    paths = {"json": write_json_atomic(out / "report.json", report)}
    paths["markdown"] = write_text_atomic(out / "report.md", markdown_tables(summaries, chance, title=title))
    for m in figure_methods:
        ws = sets[m]
        paths[f"confusion_{m}"] = confusion_png(
            results[m].confusion["multi_animal"], ws.class_names, out / f"confusion_{m}.png",
            title=f"{m}: multi-animal (held-out animals pooled), 100 % labels",
        )
        paths[f"embedding_{m}"] = embedding_png(ws, out / f"embedding_{m}.png", method=projection, title=f"{m}: {projection.upper()} of window embeddings")
    return paths
