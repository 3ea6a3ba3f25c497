"""The benchmark's inputs: the simulated held-out animal and the default model, cached.

Simulated with the bench preset at the benchmark's rate and frame size; the model is trained
briefly on other animals and exported calibrated for the held-out one from a trial that is not
replayed. Both are cached under the work directory (keyed by what they depend on).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tools.bench.latency import BenchSettings


HELDOUT_ANIMAL_INDEX = 7  # the simulator's bench preset has 8 animals; the last one is held out
TRAIN_ANIMALS = 3


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def simulate_animal(out_dir: Path, animal_index: int, n_trials: int, seconds: float, settings: BenchSettings,
                    first_trial: int = 0) -> Path:
    """Simulate trials `first_trial ..` (`n_trials` of them) of one animal of the bench preset
    (256 x 256 at 30 frames/s)."""
    from tqdm import tqdm

    from tools.simulator import get_preset, make_animals, simulate_trial
    from trainer.data.recording import write_trial
    from trainer.data.schema import ACTION_NAMES, JOINT_NAMES

    config = get_preset("bench").with_overrides(
        neural_rate_hz=settings.rate_fps, frame_shape=settings.frame_shape, trial_seconds=seconds,
    )
    _, animals = make_animals(config, settings.seed)
    animal = animals[animal_index]
    out_dir.mkdir(parents=True, exist_ok=True)
    for t in tqdm(range(first_trial, first_trial + n_trials), desc=f"simulate {animal.animal_id}", unit="trial",
                  disable=not settings.progress):
        path = out_dir / f"{animal.animal_id}_trial{t:02d}.h5"
        if path.exists():
            continue
        trial = simulate_trial(config, animal, t, settings.seed)
        write_trial(path, animal_id=trial.animal_id, trial_id=trial.trial_id, neural=trial.neural,
                    neural_times=trial.neural_times, pose=trial.pose, pose_times=trial.pose_times,
                    joint_names=JOINT_NAMES, labels=trial.labels, class_names=ACTION_NAMES,
                    neural_rate_hz=config.neural_rate_hz, pose_rate_hz=config.pose_rate_hz,
                    extra={"source": "simulator", "seed": settings.seed, "preset": "bench",
                           "purpose": "replay-bench"})
    return out_dir


def prepare_heldout(settings: BenchSettings) -> Path:
    """The held-out animal's trials, enough frames for the run (cached in the work directory)."""
    seconds = float(min(60, max(4, math.ceil(settings.frames / settings.rate_fps) + 2)))
    per_trial = int(seconds * settings.rate_fps) - 2  # the scanner clock starts a little late
    n_trials = max(1, math.ceil(settings.frames / per_trial))
    key = _key("heldout", settings.seed, settings.rate_fps, settings.frame_shape, n_trials, seconds)
    out = settings.work_dir / f"heldout-{key}"
    return simulate_animal(out, HELDOUT_ANIMAL_INDEX, n_trials, seconds, settings)


CALIBRATION_TRIAL = 1000  # the held-out animal's calibration trial: never one of the replayed ones

def prepare_bundle(settings: BenchSettings) -> tuple[Path, dict[str, Any]]:
    """The default model, trained briefly on other simulated animals and exported (cached) for
    the held-out animal, calibrated from 30 s of it that the benchmark does not replay."""
    from trainer.config import load_config
    from trainer.export import export_checkpoint
    from trainer.train import train

    key = _key("model", settings.seed, settings.rate_fps, settings.frame_shape, settings.train_steps,
               settings.train_batch, TRAIN_ANIMALS, "session-calibrated")
    root = settings.work_dir / f"model-{key}"
    bundle_dir = root / "bundle"
    info: dict[str, Any] = {
        "how": f"default model (neural_conv), trained by the benchmark for {settings.train_steps} steps of "
               f"{settings.train_batch} windows on {TRAIN_ANIMALS} simulated animals, not the held-out one, "
               "calibrated for the held-out animal from a trial that is not replayed",
    }
    if (bundle_dir / "manifest.json").exists():
        return bundle_dir, info
    train_dir = root / "train-data"
    for animal in range(TRAIN_ANIMALS):
        simulate_animal(train_dir, animal, 1, 30.0, settings)
    cfg = load_config(None, ["optim.epochs=1", f"optim.steps_per_epoch={settings.train_steps}",
                             f"optim.batch_size={settings.train_batch}", f"seed={settings.seed}",
                             f"progress={'true' if settings.progress else 'false'}"])
    result = train(cfg, train_dir, root / "run")
    calibration = simulate_animal(root / "calibration", HELDOUT_ANIMAL_INDEX, 1, 30.0, settings,
                                  first_trial=CALIBRATION_TRIAL)
    export_checkpoint(result.checkpoint, bundle_dir, overwrite=True, progress=False,
                      calibration_trials=sorted(calibration.glob("*.h5")))
    return bundle_dir, info
