"""`actionloop inspect DIR`: what is in a dataset, and (with --gap) how far apart its animals are."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from trainer.data.recording import RecordingError, list_trials, open_trial

log = structlog.get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="a directory of *.h5 trials")
    parser.add_argument("--gap", action="store_true",
                        help="also measure raw-linear within-animal vs held-out-animal action accuracy and identity "
                             "accuracy (logistic regression on block-averaged raw frames; takes a while)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--seed", type=int, default=0, help="seed of the linear read-outs (--gap)")


def summarise(directory: Path) -> dict[str, Any]:
    """Per-animal and whole-dataset counts; broken files are listed, not fatal."""
    paths = list_trials(directory)
    animals: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "trials": 0, "neural_frames": 0, "seconds": 0.0, "pose_frames": 0, "labelled_pose_frames": 0,
        "neural_rate_hz": set(), "pose_rate_hz": set(), "frame_shape": set(), "frame_dtype": set()})
    class_counts: dict[str, int] = {}
    class_names: list[str] = []
    broken: list[dict[str, str]] = []
    good: list[str] = []
    for p in paths:
        try:
            with open_trial(p) as t:
                a = animals[t.animal_id]
                a["trials"] += 1
                a["neural_frames"] += t.n_neural
                a["seconds"] += float(t.neural_times[-1] - t.neural_times[0]) + 1.0 / t.neural_rate_hz
                a["pose_frames"] += len(t.pose_times)
                a["neural_rate_hz"].add(round(t.neural_rate_hz, 3))
                a["pose_rate_hz"].add(round(t.pose_rate_hz, 3))
                a["frame_shape"].add(t.frame_shape)
                a["frame_dtype"].add(str(t.frame_dtype))
                if t.labels is not None:
                    a["labelled_pose_frames"] += int((t.labels >= 0).sum())
                    class_names = class_names or list(t.class_names)
                    counts = np.bincount(t.labels[t.labels >= 0], minlength=len(t.class_names))
                    for name, c in zip(t.class_names, counts):
                        class_counts[name] = class_counts.get(name, 0) + int(c)
                good.append(str(p))
        except RecordingError as exc:
            broken.append({"path": str(p), "error": exc.problem})
    per_animal = {}
    for name in sorted(animals):
        a = animals[name]
        per_animal[name] = {
            "trials": a["trials"], "neural_frames": a["neural_frames"], "seconds": round(a["seconds"], 2),
            "neural_rate_hz": sorted(a["neural_rate_hz"]), "pose_rate_hz": sorted(a["pose_rate_hz"]),
            "frame_shape": [list(s) for s in sorted(a["frame_shape"])], "frame_dtype": sorted(a["frame_dtype"]),
            "label_coverage": round(a["labelled_pose_frames"] / a["pose_frames"], 4) if a["pose_frames"] else 0.0,
        }
    total_pose = sum(a["pose_frames"] for a in animals.values())
    labelled = sum(a["labelled_pose_frames"] for a in animals.values())
    return {
        "dataset": str(directory),
        "n_animals": len(per_animal),
        "n_trials": len(good),
        "neural_frames": sum(a["neural_frames"] for a in per_animal.values()),
        "seconds": round(sum(a["seconds"] for a in per_animal.values()), 2),
        "label_coverage": round(labelled / total_pose, 4) if total_pose else 0.0,
        "class_names": class_names,
        "class_fraction": {k: round(v / labelled, 4) for k, v in class_counts.items()} if labelled else {},
        "animals": per_animal,
        "broken": broken,
        "trial_paths": good,
    }


def _print_table(summary: dict[str, Any]) -> None:
    out = sys.stdout
    print(f"dataset {summary['dataset']}: {summary['n_animals']} animals, {summary['n_trials']} trials, "
          f"{summary['neural_frames']} neural frames, {summary['seconds']:.1f} s, "
          f"labelled {100 * summary['label_coverage']:.1f} % of pose frames", file=out)
    header = f"{'animal':<14}{'trials':>7}{'frames':>9}{'seconds':>9}{'neural Hz':>11}{'pose Hz':>9}  {'frame':<14}{'labelled':>9}"
    print(header, file=out)
    for name, a in summary["animals"].items():
        shape = ",".join("x".join(map(str, s)) for s in a["frame_shape"]) + " " + ",".join(a["frame_dtype"])
        print(f"{name:<14}{a['trials']:>7}{a['neural_frames']:>9}{a['seconds']:>9.1f}"
              f"{','.join(map(str, a['neural_rate_hz'])):>11}{','.join(map(str, a['pose_rate_hz'])):>9}  "
              f"{shape:<14}{100 * a['label_coverage']:>8.1f}%", file=out)
    if summary["class_fraction"]:
        print("classes: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in summary["class_fraction"].items()), file=out)
    for b in summary["broken"]:
        print(f"BROKEN {b['path']}: {b['error']}", file=out)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def _print_gap(gap: dict[str, Any]) -> None:
    print(f"domain gap (logistic regression on raw frames block-averaged to "
          f"{gap['feature_shape'][0]}x{gap['feature_shape'][1]}, labelled frames only):")
    print(f"  within-animal action accuracy     {_pct(gap['within_animal_accuracy'])}  (leave one trial out)")
    print(f"  held-out-animal action accuracy   {_pct(gap['held_out_animal_accuracy'])}  (leave one animal out)")
    print(f"  chance (majority class)           {_pct(gap['chance_action_accuracy'])}")
    print(f"  animal identity accuracy          {_pct(gap['identity_accuracy'])}  "
          f"(unseen trials; chance {_pct(gap['chance_identity_accuracy'])})")
    for note in gap["notes"]:
        print(f"  note: {note}")


def run(args: argparse.Namespace) -> int:
    try:
        summary = summarise(args.dataset)
    except RecordingError as exc:
        log.error("cannot inspect dataset", error=str(exc))
        return 1
    result: dict[str, Any] = dict(summary)
    if args.gap:
        from tools.domain_gap import measure_gap

        if not summary["trial_paths"]:
            log.error("no readable trials to measure the gap on", dataset=str(args.dataset))
            return 1
        result["gap"] = measure_gap(summary["trial_paths"], seed=args.seed, progress=not args.json).to_dict()
    if args.json:
        result.pop("trial_paths")
        print(json.dumps(result, indent=2))
    else:
        _print_table(summary)
        if "gap" in result:
            _print_gap(result["gap"])
    return 1 if summary["broken"] else 0
