"""Simulate a whole multi-animal dataset into a directory of trial files."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from trainer.data.recording import write_trial
from trainer.data.schema import ACTION_NAMES, JOINT_NAMES
from tools.simulator.behaviour import BehaviourParams, simulate_actions
from tools.simulator.neural import (
    AnimalNeural,
    NeuronSet,
    Renderer,
    baseline_drift,
    calcium_dff,
    motion_trace,
    neural_activity,
    sample_at,
)
from tools.simulator.pose import PoseParams, add_tracking_noise, kinematic_features, simulate_pose
from tools.simulator.presets import SimulationConfig

SIMULATOR_VERSION = 1
MANIFEST = "dataset.json"


@dataclass(frozen=True)
class Animal:
    animal_id: str
    behaviour: BehaviourParams
    pose: PoseParams
    neural: AnimalNeural


@dataclass(frozen=True)
class TrialData:
    """One simulated trial in memory (the arguments of write_trial, plus ground truth)."""

    animal_id: str
    trial_id: str
    neural: np.ndarray  # T_n x H x W uint16
    neural_times: np.ndarray
    pose: np.ndarray  # T_b x 38 x 3 float32, with tracking noise
    pose_times: np.ndarray
    labels: np.ndarray  # T_b
    dff: np.ndarray  # T_n x N ground-truth indicator signal


def make_animals(config: SimulationConfig, seed: int) -> tuple[NeuronSet, list[Animal]]:
    """The shared neuron template and each animal's parameters, deterministic in `seed`."""
    root = np.random.SeedSequence([seed, SIMULATOR_VERSION])
    template_seq, *animal_seqs = root.spawn(1 + config.n_animals)
    template = NeuronSet.sample(np.random.default_rng(template_seq), config.n_template_neurons)
    animals = []
    for i, seq in enumerate(animal_seqs):
        rng = np.random.default_rng(seq)
        animals.append(Animal(
            animal_id=f"animal{i:02d}",
            behaviour=BehaviourParams.sample(rng),
            pose=PoseParams.sample(rng),
            neural=(AnimalNeural.sample(template, rng) if config.variation is None
                    else AnimalNeural.sample_varied(template, config.variation, rng)),
        ))
    return template, animals


@dataclass(frozen=True)
class TrialSignals:
    """The ground truth of one trial before imaging: behaviour, clean pose, indicator signal."""

    labels: np.ndarray  # T_b action per pose frame
    clean_pose: np.ndarray  # T_b x 38 x 3, no tracking noise
    pose_times: np.ndarray
    neural_times: np.ndarray
    dff: np.ndarray  # T_n x N indicator signal of the animal's neurons at the neural timestamps


def trial_rng(seed: int, animal: Animal, trial_index: int) -> np.random.Generator:
    animal_index = int(animal.animal_id.removeprefix("animal"))
    return np.random.default_rng(np.random.SeedSequence([seed, SIMULATOR_VERSION, 1 + animal_index, trial_index]))


def simulate_signals(config: SimulationConfig, animal: Animal, rng: np.random.Generator) -> TrialSignals:
    """actions -> pose -> neural drive -> indicator, sampled on the scanner's own clock."""
    n_pose = int(round(config.trial_seconds * config.pose_rate_hz))
    labels = simulate_actions(n_pose, config.pose_rate_hz, animal.behaviour, rng)
    clean = simulate_pose(labels, config.pose_rate_hz, animal.pose, rng)
    kin = kinematic_features(clean, config.pose_rate_hz)
    drive = neural_activity(animal.neural.neurons, labels, kin, config.pose_rate_hz, rng)
    dff = calcium_dff(drive, config.pose_rate_hz, animal.neural.rise_s, animal.neural.decay_s)
    pose_times = np.arange(n_pose) / config.pose_rate_hz
    # The scanner's clock starts a little after the pose cameras': alignment must use timestamps.
    start = rng.uniform(0.0, 1.0 / config.neural_rate_hz)
    n_neural = int((pose_times[-1] - start) * config.neural_rate_hz) + 1
    neural_times = start + np.arange(n_neural) / config.neural_rate_hz
    return TrialSignals(labels, clean, pose_times, neural_times, sample_at(dff, config.pose_rate_hz, neural_times))


def simulate_trial(config: SimulationConfig, animal: Animal, trial_index: int, seed: int,
                   renderer: Renderer | None = None) -> TrialData:
    """One trial: ground-truth signals, then imaging (motion, rendering, noise) and pose tracking."""
    rng = trial_rng(seed, animal, trial_index)
    sig = simulate_signals(config, animal, rng)
    renderer = renderer or Renderer(animal.neural, config.frame_shape)
    n = len(sig.neural_times)
    motion = motion_trace(n, config.neural_rate_hz, animal.neural, rng)
    brightness = baseline_drift(n, config.neural_rate_hz, sig.neural_times, animal.neural, rng)
    frames = np.concatenate(list(renderer.render(sig.dff, brightness, motion, rng)))
    return TrialData(
        animal_id=animal.animal_id,
        trial_id=f"trial{trial_index:02d}",
        neural=frames,
        neural_times=sig.neural_times,
        pose=add_tracking_noise(sig.clean_pose, rng),
        pose_times=sig.pose_times,
        labels=sig.labels,
        dff=sig.dff.astype(np.float32),
    )


def simulate_dataset(config: SimulationConfig, seed: int, out_dir: str | os.PathLike[str], *,
                     progress: bool = True, on_trial: Callable[[Path], None] | None = None) -> list[Path]:
    """Write every trial of `config` into `out_dir` (created) plus a `dataset.json` manifest.

    Deterministic in (config, seed). Each file is written atomically, so an interrupted run
    leaves only complete trials behind.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _, animals = make_animals(config, seed)
    paths: list[Path] = []
    total = config.n_animals * config.trials_per_animal
    # One BLAS thread: the matmuls are small and the machine is shared; threads only contend.
    with tqdm(total=total, desc=f"simulate {config.name}", unit="trial", disable=not progress) as bar, \
            threadpool_limits(1):
        for animal in animals:
            renderer = Renderer(animal.neural, config.frame_shape)
            for t in range(config.trials_per_animal):
                trial = simulate_trial(config, animal, t, seed, renderer)
                path = write_trial(
                    out / f"{trial.animal_id}_{trial.trial_id}.h5",
                    animal_id=trial.animal_id,
                    trial_id=trial.trial_id,
                    neural=trial.neural,
                    neural_times=trial.neural_times,
                    pose=trial.pose,
                    pose_times=trial.pose_times,
                    joint_names=JOINT_NAMES,
                    labels=trial.labels,
                    class_names=ACTION_NAMES,
                    neural_rate_hz=config.neural_rate_hz,
                    pose_rate_hz=config.pose_rate_hz,
                    extra={"source": "simulator", "simulator_version": SIMULATOR_VERSION, "seed": seed,
                           "preset": config.name},
                )
                paths.append(path)
                if on_trial is not None:
                    on_trial(path)
                bar.update(1)
    manifest = {
        "source": "actionloop simulator",
        "simulator_version": SIMULATOR_VERSION,
        "seed": seed,
        "config": config.to_dict(),
        "animals": [_describe(a, config) for a in animals],
        "trials": [p.name for p in paths],
    }
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / MANIFEST)
    return paths


def _describe(animal: Animal, config: SimulationConfig) -> dict[str, object]:
    """An animal's line in the manifest: its neurons, field-of-view transform, kinetics and
    (varied presets) how much of its anatomy's deformation rigid alignment cannot remove."""
    n = animal.neural
    d: dict[str, object] = {
        "animal_id": animal.animal_id, "n_neurons": len(n.neurons), "n_shared": int((n.template_index >= 0).sum()),
        "rotation_deg": round(float(np.degrees(n.rotation_rad)), 2), "scale": round(n.scale, 3),
        "rise_s": round(n.rise_s, 3), "decay_s": round(n.decay_s, 3),
    }
    if n.deformation is not None:
        px_per_unit = (min(config.frame_shape) - 1) / 2
        d["deformation_rms_px"] = round(n.deformation.non_rigid_rms() * px_per_unit, 2)
    return d
