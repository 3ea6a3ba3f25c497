"""How much of an encoder's cross-animal error is a domain gap: the same probe, tested on new
trials of the animals it was trained on and on an animal it never saw.

For each animal `a` in turn and each of the two trial folds k (`protocol.two_folds`): a linear
probe is trained on fold k of every animal except `a`, then scored on fold 1-k of those animals
(*seen*: new trials, known animals) and on every window of `a` (*unseen*). Same probe, same
training windows, so seen - unseen is what changing the animal costs, and nothing else. Swapping
animals during training can only help by shrinking that difference; where it is already near
zero, the paper's mechanism has nothing left to close.

    python -m trainer.evaluation.gap --work bench/work/runs/bench --data bench/work/data-bench \
        --out bench/gap.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from tqdm import tqdm

from trainer.evaluation.protocol import two_folds
from trainer.evaluation.windows import EvaluationError, WindowSet
from trainer.probe import LinearProbe


def domain_gap(ws: WindowSet, probe_c: float = 1.0, progress: Callable[[str], None] | None = None) -> dict[str, object]:
    """{"seen": %, "unseen": %, "gap": seen - unseen, "per_animal": {a: {"seen", "unseen"}}}:
    action accuracy (labelled windows, 100 % labels) as described in the module docstring."""
    if len(ws.animal_ids) < 2:
        raise EvaluationError(f"a domain gap needs >= 2 animals, got {ws.animal_ids}")
    labelled = np.flatnonzero(ws.labels >= 0)
    folds = {a: two_folds(ws, labelled[ws.animals[labelled] == a]) for a in ws.animal_ids}
    short = [a for a, f in folds.items() if not f]
    if short:
        raise EvaluationError(f"animals {short} have too little labelled data for two trial folds")
    n_classes = len(ws.class_names)
    per_animal: dict[str, dict[str, float]] = {}
    for held_out in ws.animal_ids:
        others = [a for a in ws.animal_ids if a != held_out]
        unseen = labelled[ws.animals[labelled] == held_out]
        hits = {"seen": [0, 0], "unseen": [0, 0]}
        for k in range(2):
            train = np.concatenate([folds[a][k][0] for a in others])
            seen = np.concatenate([folds[a][k][1] for a in others])
            probe = LinearProbe(c=probe_c).fit(ws.features[train], ws.labels[train], n_classes)
            for name, test in (("seen", seen), ("unseen", unseen)):
                hits[name][0] += int((probe.predict(ws.features[test]) == ws.labels[test]).sum())
                hits[name][1] += int(test.size)
        per_animal[held_out] = {name: 100.0 * h / n for name, (h, n) in hits.items()}
        if progress is not None:
            progress(held_out)
    seen_mean = float(np.mean([v["seen"] for v in per_animal.values()]))
    unseen_mean = float(np.mean([v["unseen"] for v in per_animal.values()]))
    return {"seen": seen_mean, "unseen": unseen_mean, "gap": seen_mean - unseen_mean, "per_animal": per_animal}


def gap_table(gaps: Mapping[str, Mapping[str, object]]) -> str:
    from trainer.evaluation.report import METHOD_TITLES, ordered_methods

    lines = ["| Method | Seen animals, new trials | Unseen animal | Gap (points) |", "|---|---|---|---|"]
    for m in ordered_methods(list(gaps)):
        g = gaps[m]
        lines.append(f"| {METHOD_TITLES.get(m, m)} | {g['seen']:.1f} | {g['unseen']:.1f} | {g['gap']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True,
                        help="bench-train checkpoints folder (METHOD/checkpoint.pt, or METHOD/seedK/checkpoint.pt: "
                        "the lowest seed of each)")
    parser.add_argument("--data", required=True, help="labelled dataset the checkpoints were trained on")
    parser.add_argument("--out", required=True, help="JSON file; a markdown table is written beside it")
    parser.add_argument("--raw", action="store_true", help="also the raw-frame baselines (raw_linear, raw_linear_aligned)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from trainer.evaluation.baselines import raw_linear_aligned_windows, raw_linear_windows
    from trainer.evaluation.embed import encoders_windows, load_encoder, load_tables
    from trainer.evaluation.report import write_json_atomic, write_text_atomic
    from trainer.train import CHECKPOINT

    progress = not args.no_progress
    work = Path(args.work)
    found = {p.parent.name: p for p in sorted(work.glob(f"*/{CHECKPOINT}"))}
    for p in sorted(work.glob(f"*/seed*/{CHECKPOINT}"), key=lambda q: (q.parent.parent.name, int(q.parent.name[4:] or 0))):
        found.setdefault(p.parent.parent.name, p)  # bench-train's layout: the first training seed
    if not found:
        print(f"no */{CHECKPOINT} or */seed*/{CHECKPOINT} under {args.work}", file=sys.stderr)
        return 1
    encoders = {name: load_encoder(p)[0] for name, p in found.items()}
    sets = encoders_windows(encoders, args.data, progress=progress)
    if args.raw:
        window = next(iter(encoders.values())).window
        tables = load_tables(args.data, progress=progress)
        sets["raw_linear"] = raw_linear_windows(tables, window)
        sets["raw_linear_aligned"] = raw_linear_aligned_windows(tables, window)
    gaps = {}
    animals = len(next(iter(sets.values())).animal_ids)
    with tqdm(total=animals * len(sets), desc="domain gap", unit="held-out animal", disable=not progress) as bar:
        for name, ws in sets.items():
            def tick(animal: str, name: str = name) -> None:
                bar.set_postfix_str(f"{name} {animal}")
                bar.update(1)

            gaps[name] = domain_gap(ws, progress=tick)
    out = Path(args.out)
    write_json_atomic(out, gaps)
    table = gap_table(gaps)
    write_text_atomic(out.with_suffix(".md"), table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
