"""Windows of a dataset as a `WindowSet`: through a trained encoder, or as pooled raw frames.

A window is the ``window`` neural frames ending at frame t (t = window-1 .. T-1 of each trial);
its label is the action at frame t (`Trial.neural_labels`). Every method is evaluated on exactly
these windows, so their scores compare.

Evaluated as deployed: every animal's first trial (by file order) is its calibration recording.
Whatever a method estimates per animal without labels (field-of-view alignment, pixel baseline,
feature statistics, per-pixel z-scores) comes from that trial alone, and its windows are never
scored; every other trial is scored. So an animal needs at least two trials.

Encoders whose checkpoint asks for online centring (trainer/adaptation.py) are read as the
daemon runs them: every animal's scored windows, in file order, are centred on the running mean
of the embeddings decoded before them (`online_centred`); `online_centring=False` reads the
calibration's centring alone (the benchmark's ablation of it).

Frames are read trial by trial in chunks, so memory is bounded by one chunk of raw frames plus
the per-frame outputs, never a whole dataset of raw frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from trainer.adaptation import OnlineCentring, checkpoint_online_centring
from trainer.calibration import CalibrationSet
from trainer.data.recording import list_trials, open_trial
from trainer.evaluation.windows import EvaluationError, WindowSet

CHUNK_FRAMES = 256


@dataclass
class TrialTable:
    """Per-frame data of one trial, pooled: what raw baselines and CEBRA read."""

    key: str                 # "animal/trial"
    animal: str
    labels: np.ndarray       # (T,) int64 per neural frame, -1 unlabelled
    pooled: np.ndarray       # (T, h*w) float32 block-averaged raw counts
    pose: np.ndarray         # (T, J, 3) float32 pose at each neural frame's timestamp
    class_names: tuple[str, ...]
    pooled_shape: tuple[int, int]  # (h, w) of each pooled frame
    calibration: bool = False      # the animal's calibration trial: its statistics, never scored


def trial_key(animal: str, trial: str) -> str:
    return f"{animal}/{trial}"


def pool_factor(frame_shape: tuple[int, int], pooled_short_side: int) -> int:
    return max(1, min(frame_shape) // pooled_short_side)


def block_pool(frames: np.ndarray, factor: int) -> np.ndarray:
    """Average-pool (T, H, W) by ``factor`` (remainder rows/cols dropped) -> (T, H//f, W//f) float32."""
    t, h, w = frames.shape
    hh, ww = h // factor, w // factor
    x = np.asarray(frames[:, : hh * factor, : ww * factor], dtype=np.float32)
    return x.reshape(t, hh, factor, ww, factor).mean(axis=(2, 4))


def _class_names(found: list[tuple[str, ...]], paths: list[Path]) -> tuple[str, ...]:
    names = {c for c in found if c}
    if len(names) > 1:
        raise EvaluationError(f"trials of {paths[0].parent} disagree on class names: {sorted(names)}")
    if not names:
        raise EvaluationError(f"no trial of {paths[0].parent} has action labels; the probes need labels")
    return names.pop()


def calibration_trials(paths: list[Path]) -> dict[str, Path]:
    """Each animal's calibration trial (its first in file order); refuses animals with one trial."""
    by_animal: dict[str, list[Path]] = {}
    for path in paths:
        with open_trial(path) as trial:
            by_animal.setdefault(trial.animal_id, []).append(path)
    single = sorted(a for a, p in by_animal.items() if len(p) < 2)
    if single:
        raise EvaluationError(f"animals {single} have a single trial; evaluation calibrates each animal on one "
                              "trial and scores its other trials, so every animal needs at least two")
    return {animal: mine[0] for animal, mine in by_animal.items()}


def scored(tables: list[TrialTable]) -> list[TrialTable]:
    """The trials that are scored (all but each animal's calibration trial)."""
    return [t for t in tables if not t.calibration]


def load_tables(data_dir: str | Path, pooled_short_side: int = 16, progress: bool = True) -> list[TrialTable]:
    """Read every trial of ``data_dir`` once: pooled frames, labels and pose per neural frame;
    each animal's calibration trial is marked (module docstring)."""
    paths = list_trials(data_dir)
    calibration = set(calibration_trials(paths).values())
    tables: list[TrialTable] = []
    for path in tqdm(paths, desc="read trials", unit="trial", disable=not progress):
        with open_trial(path) as trial:
            factor = pool_factor(trial.frame_shape, pooled_short_side)
            chunks = [block_pool(trial.neural[i:i + CHUNK_FRAMES], factor)
                      for i in range(0, trial.n_neural, CHUNK_FRAMES)]
            pooled = np.concatenate(chunks).reshape(trial.n_neural, -1)
            tables.append(TrialTable(
                trial_key(trial.animal_id, trial.trial_id), trial.animal_id, trial.neural_labels(),
                pooled, trial.neural_pose(), tuple(trial.class_names), tuple(chunks[0].shape[1:]),
                path in calibration,
            ))
    _class_names([t.class_names for t in tables], paths)
    return tables


def windows_from_frames(
    tables: list[TrialTable], per_frame: list[np.ndarray], window: int, flatten_window: bool,
) -> WindowSet:
    """Build the window set from per-frame features of each trial.

    flatten_window: False -> the feature of window t is the per-frame row t (the model already
    saw frames t-window+1..t); True -> the window's rows, averaged in two halves and concatenated.
    """
    feats, labels, animals, trials = [], [], [], []
    for table, frames in zip(tables, per_frame):
        n = frames.shape[0] - window + 1
        if n <= 0:
            continue  # a trial shorter than one window gives no window
        if flatten_window:
            half = max(1, window // 2)
            idx = np.arange(window - 1, frames.shape[0])
            csum = np.concatenate([np.zeros((1, frames.shape[1]), np.float64), np.cumsum(frames, axis=0, dtype=np.float64)])
            first = (csum[idx - window + 1 + half] - csum[idx - window + 1]) / half
            second = (csum[idx + 1] - csum[idx - window + 1 + half]) / max(1, window - half)
            f = np.concatenate([first, second], axis=1).astype(np.float32) if window > 1 else frames.astype(np.float32)
        else:
            f = frames[window - 1:]
        feats.append(f)
        labels.append(table.labels[window - 1:])
        animals += [table.animal] * n
        trials += [table.key] * n
    if not feats:
        raise EvaluationError(f"every trial is shorter than the window of {window} frames")
    return WindowSet(
        np.concatenate(feats).astype(np.float32), np.concatenate(labels).astype(np.int64),
        np.array(animals), np.array(trials), tables[0].class_names, window,
    )


def _encoder_windows_of_trial(model: object, frames: np.ndarray, batch: int) -> np.ndarray:
    """Embeddings of every window of one trial's raw frames (T, H, W): each frame encoded once."""
    import torch

    window = int(model.window)  # type: ignore[attr-defined]
    feats = []
    with torch.inference_mode():
        for i in range(0, frames.shape[0], batch):
            raw = torch.from_numpy(np.asarray(frames[i:i + batch], dtype=np.float32))
            feats.append(model.frame_encoder(raw))  # type: ignore[attr-defined]
        per_frame = torch.cat(feats)
        # Windows are strided views of the per-frame features, as in the daemon's ring buffer.
        windows = per_frame.unfold(0, window, 1).permute(0, 2, 1)  # (T-window+1, W, F)
        out = [model.temporal(windows[i:i + batch].contiguous())  # type: ignore[attr-defined]
               for i in range(0, windows.shape[0], batch)]
    return torch.cat(out).numpy().astype(np.float32)


def encoders_windows(
    models: Mapping[str, object], data_dir: str | Path, batch: int = 256, progress: bool = True,
    online_centring: bool = True,
) -> dict[str, WindowSet]:
    """Embeddings of every scored window of ``data_dir`` through each `NeuralEncoder` of
    ``models`` (eval mode, CPU); session-normalised encoders are calibrated for each animal from
    its calibration trial, whose windows are not scored, then (``online_centring``) centred
    online as their checkpoint asks. Each trial is read from disk once for all models (one trial
    of raw frames in memory at a time)."""
    if not models:
        raise EvaluationError("no encoder to embed with")
    for model in models.values():
        model.eval()  # type: ignore[attr-defined]
    paths = list_trials(data_dir)
    calibration = calibration_trials(paths)
    # calibration trials first, so each animal is calibrated before its scored trials
    first = set(calibration.values())
    paths = [p for p in paths if p in first] + [p for p in paths if p not in first]
    feats: dict[str, list[np.ndarray]] = {name: [] for name in models}
    labels: dict[str, list[np.ndarray]] = {name: [] for name in models}
    animals: dict[str, list[str]] = {name: [] for name in models}
    trials: dict[str, list[str]] = {name: [] for name in models}
    names = []
    calibrated: dict[str, dict[str, object]] = {name: {} for name in models}
    for path in tqdm(paths, desc="embed trials", unit="trial", disable=not progress):
        with open_trial(path) as trial:
            for model in models.values():
                if tuple(trial.frame_shape) != tuple(model.frame_shape):  # type: ignore[attr-defined]
                    raise EvaluationError(
                        f"{path}: frames are {trial.frame_shape} but the encoder expects "
                        f"{tuple(model.frame_shape)}"  # type: ignore[attr-defined]
                    )
            names.append(tuple(trial.class_names))
            frames = np.asarray(trial.neural[:])
            frame_labels = trial.neural_labels()
            key = trial_key(trial.animal_id, trial.trial_id)
            for name, model in models.items():
                window = int(model.window)  # type: ignore[attr-defined]
                if path in first:
                    _calibrate(model, trial.animal_id, frames, calibrated[name])
                    continue
                if trial.n_neural < window:
                    continue  # shorter than one window: no window to score
                _install_calibration(model, trial.animal_id, calibrated[name])
                emb = _encoder_windows_of_trial(model, frames, batch)
                feats[name].append(emb)
                labels[name].append(frame_labels[window - 1:])
                animals[name] += [trial.animal_id] * emb.shape[0]
                trials[name] += [key] * emb.shape[0]
    class_names = _class_names(names, paths)
    out = {}
    for name, model in models.items():
        window = int(model.window)  # type: ignore[attr-defined]
        if not feats[name]:
            raise EvaluationError(f"every trial of {data_dir} is shorter than the window of {window} frames")
        ws = WindowSet(
            np.concatenate(feats[name]), np.concatenate(labels[name]).astype(np.int64),
            np.array(animals[name]), np.array(trials[name]), class_names, window,
        )
        centring = getattr(model, "online_centring", None)
        out[name] = online_centred(ws, centring) if online_centring and centring is not None else ws
    return out


def online_centred(ws: WindowSet, centring: OnlineCentring) -> WindowSet:
    """``ws`` with each animal's windows (a stream: its scored trials in file order, each trial's
    windows in time order, as `encoders_windows` builds it) centred online, as the daemon does."""
    feats = ws.features.copy()
    for animal in ws.animal_ids:
        rows = np.flatnonzero(ws.animals == animal)
        feats[rows] = centring.centre(ws.features[rows])
    return WindowSet(feats, ws.labels, ws.animals, ws.trials, ws.class_names, ws.window)


def _calibrate(model: object, animal: str, frames: np.ndarray, done: dict[str, object]) -> None:
    """Calibrate a session-normalised encoder for `animal` from its calibration trial's raw
    frames (no labels), as `actionloop export --calibrate` does; training animals too, so no
    animal's statistics come from a scored trial."""
    import torch

    from trainer.calibration import calibrate_encoder

    frame_encoder = model.frame_encoder  # type: ignore[attr-defined]
    if frame_encoder.session is None:
        return
    calibrations = getattr(model, "calibrations", None)
    if calibrations is None:
        raise EvaluationError("a session-normalised encoder needs its checkpoint's calibration "
                              "(load it with load_encoder)")
    with torch.inference_mode():
        pooled = frame_encoder.preprocess(torch.from_numpy(np.asarray(frames, dtype=np.float32))).squeeze(1).numpy()
    done[animal] = calibrate_encoder(model, pooled, calibrations.template)  # type: ignore[arg-type]


def _install_calibration(model: object, animal: str, done: dict[str, object]) -> None:
    if model.frame_encoder.session is not None:  # type: ignore[attr-defined]
        model.set_calibration(done[animal])  # type: ignore[attr-defined]


def encoder_windows(model: object, data_dir: str | Path, batch: int = 256, progress: bool = True) -> WindowSet:
    """Embeddings of every window of ``data_dir`` through one `NeuralEncoder`."""
    return encoders_windows({"model": model}, data_dir, batch, progress)["model"]


def load_encoder(checkpoint: str | Path) -> tuple[object, dict]:
    """Rebuild the neural encoder of a checkpoint (docs/contracts.md, "Checkpoint"), on CPU."""
    import torch

    from trainer.models import build_model

    path = Path(checkpoint)
    if not path.is_file():
        raise EvaluationError(f"{path}: checkpoint file does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a bad file; name the file
        raise EvaluationError(f"{path}: not a readable checkpoint ({exc})") from exc
    missing = [k for k in ("model_name", "model_args", "state_dict") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise EvaluationError(f"{path}: checkpoint lacks {missing}")
    try:
        model = build_model(ckpt["model_name"], **ckpt["model_args"])
        model.load_state_dict(ckpt["state_dict"])
    except (ValueError, RuntimeError) as exc:
        raise EvaluationError(f"{path}: cannot rebuild the encoder: {exc}") from exc
    model.eval()
    model.calibrations = CalibrationSet.from_checkpoint(ckpt)  # session encoders: per-animal calibration
    model.online_centring = checkpoint_online_centring(ckpt)
    return model, ckpt


def load_projection(ckpt: Mapping[str, object]) -> object | None:
    """The contrastive loss's neural projection head stored in a checkpoint (eval mode, CPU), or
    None for methods without one and for checkpoints written before it was stored."""
    from trainer.models import build_model

    stored = ckpt.get("projection")
    if not isinstance(stored, Mapping):
        return None
    head = build_model(stored["model_name"], **stored["model_args"])  # type: ignore[arg-type]
    head.load_state_dict(stored["state_dict"])  # type: ignore[attr-defined]
    return head.eval()  # type: ignore[attr-defined]


def projected(ws: WindowSet, head: object, batch: int = 4096) -> WindowSet:
    """``ws`` with every embedding passed through the projection head (where the contrastive
    loss works), for asking whether identity hides in the embedding or also in the loss's space."""
    import torch

    with torch.inference_mode():
        out = [head(torch.from_numpy(ws.features[i:i + batch]))  # type: ignore[operator]
               for i in range(0, ws.features.shape[0], batch)]
    feats = torch.cat(out).numpy().astype(np.float32)
    return WindowSet(feats, ws.labels, ws.animals, ws.trials, ws.class_names, ws.window)
