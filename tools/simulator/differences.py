"""How different the simulated animals are once their fields of view are rigidly aligned: measured,
not configured, so a preset's claims (tools/simulator/variation.py) can be checked.

    python -m tools.simulator.differences --preset tiny-varied --seed 0 [--seconds 8] [--no-images | --no-estimate]

From the simulator's ground truth (every pair of animals, or every animal against the template):

- `visible_overlap`: of one animal's template neurons, the share the other animal also shows;
- `deformation_rms_px`, `deformation_max_px`: the anatomy's smooth deformation over the whole
  field (its non-rigid part's RMS; the largest displacement), in frame pixels;
- `residual_px`: RMS distance of an animal's template neurons from the template's positions
  after the best similarity fit (rotation, scale, shift) of one onto the other, in frame pixels;
  what rigid alignment leaves (per-neuron jitter, plus the deformation in varied presets);
- `tuning_correlation`: correlation of the tuning weights (actions and kinematics) of the neurons
  two animals both show; `template_tuning_correlation`: an animal's against the template's;
- `log_gain_sd`: spread of log(response amplitude / the template's) over an animal's template neurons.

From frames, as the trainer sees them (`images`): one trial per animal, average-pooled to 32
pixels a side, a registration image each (trainer.alignment: band-passed mean and spread of
log counts). `aligned_correlation`: every pair of animals' images after undoing the simulator's
true field-of-view transform (1: identical after perfect rigid alignment). `registration_score`
(not with `--no-estimate`): each animal's fit to the group template the trainer would build
with its own similarity registration (slower: a search per animal).
"""

from __future__ import annotations

import argparse
import itertools
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.simulator.neural import AnimalNeural, NeuronSet
from tools.simulator.presets import SimulationConfig, get_preset
from tools.simulator.simulate import make_animals, simulate_trial
from tools.simulator.variation import field_grid, similarity_residual

if TYPE_CHECKING:
    from trainer.alignment import Alignment

POOLED_SIDE = 32  # the trainer's default pooled size (trainer.config: model.pooled_size)


def _stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"mean": round(float(v.mean()), 4), "min": round(float(v.min()), 4), "max": round(float(v.max()), 4)}


def visible_overlap(a: AnimalNeural, b: AnimalNeural) -> float:
    mine = a.template_index[a.template_index >= 0]
    return float(np.isin(mine, b.template_index).mean())


def template_positions_residual(template: NeuronSet, animal: AnimalNeural) -> np.ndarray:
    """(n_shared, 2) displacement of an animal's template neurons that no similarity transform of
    the template removes (normalised units)."""
    shared = animal.template_index >= 0
    return similarity_residual(template.positions[animal.template_index[shared]], animal.neurons.positions[shared])


def _tuning(neurons: NeuronSet, rows: np.ndarray) -> np.ndarray:
    """Tuning weights of `rows`, each weight centred on its mean over them, flattened: every
    neuron prefers some action more than average, which would correlate any two animals."""
    w = np.concatenate([neurons.action_weights[rows], neurons.kin_weights[rows]], axis=1)
    return (w - w.mean(axis=0)).ravel()


def tuning_correlation(a: AnimalNeural, b: AnimalNeural) -> float:
    both, ia, ib = np.intersect1d(a.template_index, b.template_index, return_indices=True)
    ok = both >= 0
    return float(np.corrcoef(_tuning(a.neurons, ia[ok]), _tuning(b.neurons, ib[ok]))[0, 1])


def template_tuning_correlation(template: NeuronSet, animal: AnimalNeural) -> float:
    shared = np.flatnonzero(animal.template_index >= 0)
    return float(np.corrcoef(_tuning(animal.neurons, shared), _tuning(template, animal.template_index[shared]))[0, 1])


def deformation_px(animal: AnimalNeural, px_per_unit: float) -> tuple[float, float]:
    """The anatomy's deformation over the field: RMS of its non-rigid part and the largest
    displacement anywhere, in frame pixels (0, 0 without one)."""
    if animal.deformation is None:
        return 0.0, 0.0
    peak = np.linalg.norm(animal.deformation.displacement(field_grid()), axis=1).max()
    return animal.deformation.non_rigid_rms() * px_per_unit, float(peak) * px_per_unit


def log_gain_sd(template: NeuronSet, animal: AnimalNeural) -> float:
    shared = animal.template_index >= 0
    return float(np.std(np.log(animal.neurons.amplitude[shared] / template.amplitude[animal.template_index[shared]])))


def ground_truth(config: SimulationConfig, seed: int) -> dict[str, Any]:
    template, animals = make_animals(config, seed)
    neural = [a.neural for a in animals]
    pairs = list(itertools.permutations(neural, 2))
    px_per_unit = (min(config.frame_shape) - 1) / 2
    rms = [float(np.sqrt((template_positions_residual(template, n) ** 2).sum(axis=1).mean())) * px_per_unit
           for n in neural]
    fields = [deformation_px(n, px_per_unit) for n in neural]
    return {
        "visible_overlap": _stats([visible_overlap(a, b) for a, b in pairs]),
        "residual_px": _stats(rms),
        "deformation_rms_px": _stats([f[0] for f in fields]),
        "deformation_max_px": _stats([f[1] for f in fields]),
        "tuning_correlation": _stats([tuning_correlation(a, b) for a, b in itertools.combinations(neural, 2)]),
        "template_tuning_correlation": _stats([template_tuning_correlation(template, n) for n in neural]),
        "log_gain_sd": _stats([log_gain_sd(template, n) for n in neural]),
    }


def pooled(frames: np.ndarray, side: int = POOLED_SIDE) -> np.ndarray:
    """(T, H, W) -> average-pooled to about `side` pixels on the shorter side (as the encoder's first layer)."""
    f = max(1, min(frames.shape[1:]) // side)
    t, h, w = frames.shape
    x = frames[:, : h // f * f, : w // f * f].astype(np.float32)
    return x.reshape(t, h // f, f, w // f, f).mean(axis=(2, 4))


def true_alignment(animal: AnimalNeural, frame_shape: tuple[int, int]) -> Alignment:
    """The simulator's own field-of-view transform as a `trainer.alignment.Alignment`. The
    simulator's coordinates put pixel centres at +-1, `affine_grid`'s put pixel edges there (and
    average pooling keeps edges): the two differ by a scale of W / (W - 1) per axis, so rotation
    and scale carry over and a shift t becomes t (W - 1) / W (exact for square frames)."""
    from trainer.alignment import Alignment

    h, w = frame_shape
    return Alignment(float(np.degrees(animal.rotation_rad)), float(animal.scale),
                     float(animal.translation[0]) * (w - 1) / w, float(animal.translation[1]) * (h - 1) / h)


def _correlation(a: np.ndarray, b: np.ndarray, inside: np.ndarray) -> float:
    return float(np.corrcoef(a[:, inside].ravel(), b[:, inside].ravel())[0, 1])


def images(config: SimulationConfig, seed: int, estimate: bool = True) -> dict[str, Any]:
    """Registration images (trainer.alignment) of every animal's first trial, pooled as the
    encoder pools. `aligned_correlation`: every pair of animals' images after undoing the true
    field-of-view transform (what perfect rigid alignment leaves; central 80 % of the field, so
    no animal's border enters). `registration_score`: each animal's similarity fit to the group
    template the trainer would build (its own estimate, not the truth)."""
    from trainer.alignment import build_template, registration_image, warp_image

    _, animals = make_animals(config, seed)
    regs = [registration_image(pooled(simulate_trial(config, a, 0, seed).neural)) for a in animals]
    aligned = [warp_image(r, true_alignment(a.neural, config.frame_shape)) for r, a in zip(regs, animals, strict=True)]
    h, w = regs[0].shape[-2:]
    inside = np.zeros((h, w), dtype=bool)
    inside[h // 10 : h - h // 10, w // 10 : w - w // 10] = True
    out: dict[str, Any] = {"aligned_correlation": _stats([_correlation(a, b, inside)
                                                          for a, b in itertools.combinations(aligned, 2)])}
    if estimate:
        _, alignments = build_template(regs)
        out["registration_score"] = _stats([a.score for a in alignments])
    return out


def differences(config: SimulationConfig, seed: int, with_images: bool = True, estimate: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"preset": config.name, "seed": seed, "animals": config.n_animals,
                           "variation": None if config.variation is None else config.variation.to_dict(),
                           **ground_truth(config, seed)}
    if with_images:
        out["images"] = images(config, seed, estimate)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny-varied")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--animals", type=int, help="override the preset's number of animals")
    parser.add_argument("--seconds", type=float, help="override the trial duration (images: one trial per animal)")
    parser.add_argument("--no-images", action="store_true", help="ground truth only (no frames simulated)")
    parser.add_argument("--no-estimate", action="store_true", help="skip the trainer's own registration (slow)")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    config = get_preset(args.preset).with_overrides(n_animals=args.animals, trial_seconds=args.seconds)
    with threadpool_limits(1):
        print(json.dumps(differences(config, args.seed, not args.no_images, not args.no_estimate), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
