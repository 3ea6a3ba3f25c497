"""What an ideal animal-invariant encoder could reach from single frames: the read-out ceiling.

Uses the simulator's ground truth instead of pixels: the indicator signal (dF/F) of every
template neuron at each neural frame, in template order (a neuron an animal lacks reads 0).
The same logistic regression and folds as `tools.domain_gap` then give within-animal and
held-out-animal accuracy. If held-out is close to within here, the gap in raw pixels is the
animals' optics and anatomy, not missing information: a method has something to learn.

    python -m tools.simulator.ceiling --preset bench --seed 0 [--history 4 --step 2]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from tools.domain_gap import TrialFeatures, _fit_score, _stack
from tools.simulator.presets import SimulationConfig, get_preset
from tools.simulator.simulate import make_animals, simulate_signals, trial_rng


def _with_history(x: np.ndarray, history: int, step: int) -> np.ndarray:
    """Concatenate each frame's features with those `step`, 2*`step`, ... frames earlier (edge-repeated)."""
    if history <= 1:
        return x
    parts = [x]
    for j in range(1, history):
        lag = j * step
        parts.append(np.concatenate([np.repeat(x[:1], lag, axis=0), x[:-lag]])[: len(x)])
    return np.concatenate(parts, axis=1)


def shared_neuron_features(config: SimulationConfig, seed: int, progress: bool = True, history: int = 1,
                           step: int = 2) -> list[TrialFeatures]:
    """Per trial: template-ordered dF/F per neural frame (plus `history` - 1 earlier frames, `step`
    apart) and the label of each frame."""
    template, animals = make_animals(config, seed)
    out = []
    total = config.n_animals * config.trials_per_animal
    with tqdm(total=total, desc="ground truth", unit="trial", disable=not progress) as bar:
        for animal in animals:
            shared = animal.neural.template_index >= 0
            for k in range(config.trials_per_animal):
                sig = simulate_signals(config, animal, trial_rng(seed, animal, k))
                x = np.zeros((len(sig.neural_times), len(template)), dtype=np.float32)
                x[:, animal.neural.template_index[shared]] = sig.dff[:, shared]
                idx = np.searchsorted(sig.pose_times, sig.neural_times, side="right") - 1
                out.append(TrialFeatures(animal.animal_id, f"trial{k:02d}", _with_history(x, history, step),
                                         sig.labels[idx]))
                bar.update(1)
    return out


def ceiling(config: SimulationConfig, seed: int, progress: bool = True, history: int = 1,
            step: int = 2) -> dict[str, Any]:
    trials = shared_neuron_features(config, seed, progress, history, step)
    animals = sorted({t.animal_id for t in trials})
    within: list[float] = []
    held: list[float] = []
    with threadpool_limits(1):
        for a in tqdm(animals, desc="read-outs", unit="animal", disable=not progress):
            mine = [t for t in trials if t.animal_id == a]
            for k in range(len(mine)):
                x_tr, y_tr = _stack([t for i, t in enumerate(mine) if i != k])
                x_te, y_te = _stack([mine[k]])
                within.append(_fit_score(x_tr, y_tr, x_te, y_te, seed))
            x_tr, y_tr = _stack([t for t in trials if t.animal_id != a])
            x_te, y_te = _stack(mine)
            held.append(_fit_score(x_tr, y_tr, x_te, y_te, seed))
    _, y_all = _stack(trials)
    return {"within_animal_accuracy": float(np.mean(within)), "held_out_animal_accuracy": float(np.mean(held)),
            "chance_action_accuracy": float(np.bincount(y_all).max() / len(y_all)),
            "features": "ground-truth dF/F of template neurons (template order)", "history_frames": history,
            "history_step": step, "preset": config.name, "seed": seed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--history", type=int, default=1, help="frames per sample (1: single frames)")
    parser.add_argument("--step", type=int, default=2, help="frames between history samples")
    args = parser.parse_args()
    print(json.dumps(ceiling(get_preset(args.preset), args.seed, history=args.history, step=args.step), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
