"""Baselines evaluated with the same windows and the same probes as the trained encoders.

- ``raw_linear``: the linear probe on raw frames. Each frame is block-averaged to a short side of
  ``pooled_short_side`` pixels (16 -> 16 x 32 for 128 x 256 frames); a window is the mean of its
  first half and the mean of its second half, concatenated (2 x h x w numbers): the probe sees
  the level and the change of every pooled pixel over the window, at a size a logistic
  regression fits in seconds.
- ``raw_linear_aligned``: the same probe on the same pooled frames after the session
  calibration the trained encoders get (trainer/calibration.py): each animal's frames aligned to
  a group template of all animals, log1p, minus the animal's per-pixel log baseline. It shows
  how much of a trained encoder's transfer the calibration alone explains.
- ``cebra``: the external peer (pip package ``cebra``), multi-session (one session per animal,
  its trials concatenated) and behaviour-supervised with the pose: a contrastive encoder over
  time whose positive pairs are frames with similar pose, across animals. Input per frame: the
  same pooled frame, log1p then z-scored per pixel with the session's statistics (standard
  preprocessing for CEBRA on imaging data; it uses no labels), measured on the animal's
  calibration trial as every method's per-animal statistics are (trainer/evaluation/embed.py). Behaviour: the pose at each neural frame,
  centred on its joint mean and scaled by the trial's RMS joint spread (removes position and
  limb-length scale), flattened. The embedding of window t is CEBRA's embedding whose
  receptive field ends at frame t (its model is centred, so that is the one at t - 4 for
  'offset10-model'): like every other method, it sees no frame after the window.
  Settings (`CebraSettings`) are small so it fits on a CPU in minutes; they are recorded in
  the report.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, replace

import numpy as np

from trainer.evaluation.embed import TrialTable, scored, windows_from_frames
from trainer.evaluation.windows import EvaluationError, WindowSet

BASELINES = ("raw_linear", "raw_linear_aligned", "cebra")  # `actionloop evaluate --baselines`


def raw_linear_windows(tables: list[TrialTable], window: int) -> WindowSet:
    """Raw pooled frames of each window (two temporal halves), for the linear probe."""
    mine = scored(tables)
    return windows_from_frames(mine, [t.pooled for t in mine], window, flatten_window=True)


def raw_linear_aligned_windows(tables: list[TrialTable], window: int) -> WindowSet:
    """`raw_linear` after session calibration (module docstring); no labels are used."""
    from trainer.calibration import calibrate_group

    def frames(t: TrialTable) -> np.ndarray:
        return t.pooled.reshape(len(t.pooled), *t.pooled_shape)

    # each animal calibrated from its calibration trial only (trainer.evaluation.embed)
    _, calibrations = calibrate_group({t.animal: frames(t) for t in tables if t.calibration})
    mine = scored(tables)
    per_frame = [calibrations[t.animal].log_ratio(frames(t)).reshape(len(t.pooled), -1) for t in mine]
    return windows_from_frames(mine, per_frame, window, flatten_window=True)


@dataclass(frozen=True)
class CebraSettings:
    """CEBRA hyper-parameters. Defaults: the paper-style 'offset10-model' kept small for CPU."""

    model_architecture: str = "offset10-model"
    output_dimension: int = 16
    num_hidden_units: int = 32
    max_iterations: int = 600
    batch_size: int = 128             # per session (animal)
    learning_rate: float = 3e-4
    temperature: float = 1.0
    time_offsets: int = 10
    conditional: str = "time_delta"   # positives: frames whose behaviour moved alike
    device: str = "cpu"
    threads: int = 1                  # torch CPU threads while fitting (see cebra_windows)
    causal: bool = True               # read the embedding whose receptive field ends at the window's frame


# The CEBRA entries of the trainer benchmark. "cebra" is the peer the targets are measured
# against: the tuned causal configuration (its receptive field ends at the decoded frame, as for
# every method here), tuned on the bench data with a budget like our method's
# (docs/evaluation.md, "Tuning the CEBRA peer"); "cebra_old" the configuration of earlier
# benchmarks; "cebra_noncausal" the tuned one reading the centred embedding (it sees frames after
# the decoded one, which no real-time decoder can): for reference only.
CEBRA_TUNED = CebraSettings(num_hidden_units=64, output_dimension=32)
CEBRA_CONFIGS: dict[str, CebraSettings] = {
    "cebra": CEBRA_TUNED,
    "cebra_old": CebraSettings(),
    "cebra_noncausal": replace(CEBRA_TUNED, causal=False),
}


def normalise_pose(pose: np.ndarray) -> np.ndarray:
    """(T, J, 3) -> (T, J*3): centred on each frame's joint mean, scaled by the trial's RMS spread."""
    centred = pose - pose.mean(axis=1, keepdims=True)
    scale = float(np.sqrt(np.mean(np.sum(centred**2, axis=2)))) or 1.0
    return (centred / scale).reshape(pose.shape[0], -1).astype(np.float32)


def _receptive_field(settings: CebraSettings):  # type: ignore[no-untyped-def]
    import cebra.models

    return cebra.models.init(
        settings.model_architecture, num_neurons=1, num_units=settings.num_hidden_units,
        num_output=settings.output_dimension,
    ).get_offset()


def _causal(per_frame: np.ndarray, shift: int) -> np.ndarray:
    """Row t <- row t - shift (the first rows repeat row 0): embeddings whose field ends at t."""
    if shift <= 0:
        return per_frame
    return np.concatenate([np.repeat(per_frame[:1], shift, axis=0), per_frame[:-shift]])


def _session_inputs(tables: list[TrialTable]) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    animals = sorted({t.animal for t in tables})
    neural, behaviour = [], []
    for animal in animals:
        mine = [t for t in tables if t.animal == animal]
        x = np.log1p(np.maximum(np.concatenate([t.pooled for t in mine]), 0.0))
        # per-pixel z-scores with the calibration trial's statistics (as deployed: no scored
        # trial informs them)
        ref = np.log1p(np.maximum(np.concatenate([t.pooled for t in mine if t.calibration]), 0.0))
        x = (x - ref.mean(axis=0)) / (ref.std(axis=0) + 1e-3)
        neural.append(x.astype(np.float32))
        behaviour.append(np.concatenate([normalise_pose(t.pose) for t in mine]))
    return animals, neural, behaviour


def cebra_windows(
    tables: list[TrialTable], window: int, settings: CebraSettings = CebraSettings(), seed: int = 0,
    progress: bool = True,
) -> tuple[WindowSet, dict[str, object]]:
    """Fit multi-session CEBRA on every animal's frames and pose; windows = per-frame embeddings
    read where `settings.causal` says (`cebra_readout`).

    Returns the window set and facts for the report (settings, fit seconds, samples per second).
    """
    per_frame, info = cebra_embeddings(tables, settings, seed, progress)
    shift = causal_shift(settings) if settings.causal else 0
    return cebra_readout(tables, per_frame, window, shift), {**info, "causal_shift_frames": shift}


def causal_shift(settings: CebraSettings) -> int:
    """Frames to delay CEBRA's centred embedding so its receptive field ends at the frame: its
    model sees frames c-left .. c+right-1 (offset10: c-5 .. c+4), so the embedding at
    c = t - (right - 1) is the one whose field ends at t."""
    return _receptive_field(settings).right - 1


def cebra_readout(tables: list[TrialTable], per_frame: dict[str, np.ndarray], window: int, shift: int) -> WindowSet:
    """Windows of the scored trials from CEBRA's per-frame (centred) embeddings, each delayed by
    `shift` frames (`causal_shift`; 0 = read the centred one, which sees later frames)."""
    mine = scored(tables)
    return windows_from_frames(mine, [_causal(per_frame[t.key], shift) for t in mine], window, flatten_window=False)


def cebra_embeddings(tables: list[TrialTable], settings: CebraSettings, seed: int = 0,
                     progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Fit multi-session CEBRA (one session per animal) and embed every trial: per trial key,
    the per-frame embeddings of CEBRA's centred model; and facts for the report."""
    import cebra
    import torch

    if len({t.animal for t in tables}) < 2:
        raise EvaluationError("multi-session CEBRA needs >= 2 animals")
    animals, neural, behaviour = _session_inputs(tables)
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = cebra.CEBRA(
        model_architecture=settings.model_architecture, output_dimension=settings.output_dimension,
        num_hidden_units=settings.num_hidden_units, max_iterations=settings.max_iterations,
        batch_size=settings.batch_size, learning_rate=settings.learning_rate,
        temperature=settings.temperature, time_offsets=settings.time_offsets,
        conditional=settings.conditional, device=settings.device, verbose=progress,
    )
    start = time.perf_counter()
    threads_before = torch.get_num_threads()
    # CEBRA's small 1-D convolutions ran several times faster on one thread than on two on a
    # shared 2-core machine (OpenMP threads spinning against other processes).
    torch.set_num_threads(settings.threads)
    try:
        with warnings.catch_warnings():
            # cebra/sklearn emit deprecation chatter about their own internals; not ours to fix.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            model.fit(neural, behaviour)
            fit_s = time.perf_counter() - start
            per_frame: dict[str, np.ndarray] = {}
            for session, (animal, x) in enumerate(zip(animals, neural)):
                emb = model.transform(x, session_id=session)
                mine = [t for t in tables if t.animal == animal]
                offsets = np.cumsum([0] + [t.pooled.shape[0] for t in mine])
                for t, lo, hi in zip(mine, offsets[:-1], offsets[1:]):
                    per_frame[t.key] = np.asarray(emb[lo:hi], dtype=np.float32)
    finally:
        torch.set_num_threads(threads_before)
    # Each iteration draws batch_size reference samples (plus as many positives and negatives).
    info = {
        "settings": asdict(settings), "seed": seed, "fit_s": fit_s,
        "train_samples_per_s": settings.max_iterations * settings.batch_size / fit_s,
    }
    return per_frame, info
