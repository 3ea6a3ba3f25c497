"""The training loop for every method, single process or DistributedDataParallel (torchrun).

Methods (all train the same `NeuralEncoder`; docs/trainer.md explains the choices):
    ours                pose-guided symmetric InfoNCE + cross-animal swapping + augmentations
    ours_adversarial    ours + an animal classifier behind gradient reversal (domain-adversarial)
    ours_mmd            ours + an MMD penalty between animals' embeddings in each batch
    contrastive_noswap  the same without swapping
    simclr              neural-only NT-Xent between two augmented views of a window
    regression          the encoder predicts the (normalised) pose window, smooth-L1

After training, the encoder is frozen, every labelled training window is embedded, and a linear
action head is fitted with `trainer.probe.LinearProbe`; the checkpoint (docs/contracts.md) carries
it. A resumable training state (`state.pt`) is written after every epoch.

Distributed: launched by `torchrun --nproc-per-node N` (env WORLD_SIZE/RANK set), each process
builds the frame table, draws its own shard of windows, and DDP averages gradients (gloo on CPU,
nccl on CUDA). Contrastive negatives are those of the local batch (no cross-process gather), so
the effective number of negatives is the per-process batch size.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from trainer.augment.neural import NeuralAugmenter
from trainer.augment.pose import PoseAugmenter
from trainer.config import TrainConfig
from trainer.data.recording import list_trials, open_trial
from trainer.frametable import FrameTable, build_frame_table, calibrate_table, dataset_fingerprint, select_trials
from trainer.losses import animal_mmd, info_nce, nt_xent, pose_regression_loss
from trainer.models import NeuralEncoder, build_model
from trainer.probe import LinearProbe
from trainer.swapping import SwapIndex, pose_descriptors, with_history

log = structlog.get_logger(__name__)

CHECKPOINT = "checkpoint.pt"
SWAPPING_METHODS = ("ours", "ours_adversarial", "ours_mmd")
CONTRASTIVE_METHODS = (*SWAPPING_METHODS, "contrastive_noswap")  # InfoNCE against the pose encoder
ANIMAL_AWARE_METHODS = ("ours_adversarial", "ours_mmd")  # their loss needs each frame's animal
STATE = "state.pt"
METRICS = "metrics.json"
LOSS_PLOT = "loss.png"


class TrainingError(ValueError):
    """Training cannot start or resume; the message says why."""


@dataclass
class TrainResult:
    checkpoint: Path
    metrics: dict[str, Any]
    encoder: NeuralEncoder | None = None  # the trained encoder (eval mode, on the training device)


# ---------------------------------------------------------------------------------------------
# model + loss


class _ReverseGradient(torch.autograd.Function):
    """Identity forward, gradient times -weight backward (Ganin & Lempitsky's reversal layer)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: float) -> Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.weight * grad, None


class Objective(nn.Module):
    """The encoder plus the method's heads; `forward(batch)` returns the loss (one module, so DDP
    sees every trainable parameter in one forward)."""

    def __init__(self, cfg: TrainConfig, encoder: NeuralEncoder, joints: int, pose_len: int, animals: int = 1) -> None:
        super().__init__()
        self.method = cfg.method
        self.temperature = cfg.optim.temperature
        self.encoder = encoder
        d, p = cfg.model.embedding_dim, cfg.model.projection_dim
        self.adversary_weight = cfg.adversary.weight
        self.mmd_weight = cfg.mmd.weight
        self.centre_in_training = cfg.model.centre_in_training
        self.cross_animal_weight = cfg.cross_animal.weight
        if self.method == "ours_adversarial":
            self.animal_classifier = nn.Sequential(nn.Linear(d, cfg.adversary.hidden), nn.ReLU(),
                                                   nn.Linear(cfg.adversary.hidden, animals))
        if self.method in CONTRASTIVE_METHODS:
            self.pose_encoder = build_model("pose_conv", joints=joints, embedding_dim=d, channels=cfg.model.pose_channels)
            self.proj_neural = build_model("projection", embedding_dim=d, hidden=d, out_dim=p)
            self.proj_pose = build_model("projection", embedding_dim=d, hidden=d, out_dim=p)
        elif self.method == "simclr":
            self.proj_neural = build_model("projection", embedding_dim=d, hidden=d, out_dim=p)
        elif self.method == "regression":
            self.regressor = build_model("pose_regression", embedding_dim=d, steps=pose_len, joints=joints)
        else:  # config validation makes this unreachable; kept as a guard
            raise TrainingError(f"unknown method {self.method!r}")

    def embed(self, neural: Tensor, baseline: Tensor | None, animals: Tensor | None) -> Tensor:
        """Pooled windows -> embeddings, with the per-animal normalisation's batch statistics:
        every frame's animal for the features; for the embedding each window's (a swapped
        window: the animal most of its frames are from), unless it is centred only after training."""
        frame_animals = animals if self.encoder.frame_encoder.animal_norm is not None else None
        window_animals = None
        if self.encoder.temporal.animal_norm is not None and self.centre_in_training and animals is not None:
            window_animals = torch.mode(animals, dim=1).values
        return self.encoder.forward_pooled(neural, baseline, frame_animals, window_animals)

    def forward(self, neural: Tensor, other: Tensor, baseline: Tensor | None = None,
                animals: Tensor | None = None, matched: Matched | None = None) -> Tensor:
        """neural: pooled windows (B, W, h, w); other: pose windows (B, T, J, 3), or for simclr a
        second augmented view of the neural windows; baseline: each neural frame's session
        calibration (B, W, h, w), for encoders with session normalisation; animals: each neural
        frame's animal (B, W), for the methods that penalise identity or normalise per animal;
        matched: the cross-animal positive of every window (neural, baseline, animals), for
        `cross_animal.weight` > 0."""
        emb = self.embed(neural, baseline, animals)
        if self.method == "simclr":
            both = self.proj_neural(torch.cat([emb, self.embed(other, baseline, animals)]))
            return nt_xent(both[: len(emb)], both[len(emb) :], self.temperature)
        if self.method == "regression":
            return pose_regression_loss(self.regressor(emb), other)
        z_neural = self.proj_neural(emb)
        loss = info_nce(z_neural, self.proj_pose(self.pose_encoder(other)), self.temperature)
        if matched is not None and self.cross_animal_weight > 0:
            z_matched = self.proj_neural(self.embed(*matched))
            loss = loss + self.cross_animal_weight * info_nce(z_neural, z_matched, self.temperature)
        if self.method not in ANIMAL_AWARE_METHODS:
            return loss
        if animals is None:
            raise TrainingError(f"method {self.method!r} needs every frame's animal")
        # a swapped window mixes two animals: its label is the one most of its frames come from
        target = torch.mode(animals, dim=1).values
        if self.method == "ours_mmd":
            return loss + self.mmd_weight * animal_mmd(emb, target)
        logits = self.animal_classifier(_ReverseGradient.apply(emb, self.adversary_weight))
        return loss + nn.functional.cross_entropy(logits, target)


# a cross-animal positive of every window of a batch: pooled windows, baselines, animals
Matched = tuple[Tensor, Tensor | None, Tensor]


class BatchMaker:
    """Window starts -> (neural, other, baseline, animals, matched) tensors for the method: swap,
    gather, augment; baseline is the swapped frames' own session calibration (None without
    calibration), animals their animal indices (B, W) for the methods that use them (None
    otherwise), matched the cross-animal positives (neural, baseline, animals) when
    `cross_animal.weight` > 0 (else None)."""

    def __init__(self, cfg: TrainConfig, table: FrameTable, encoder: NeuralEncoder,
                 swap_index: SwapIndex | None, match_index: SwapIndex | None = None) -> None:
        self.cfg = cfg
        self.table = table
        self.swap_index = swap_index
        self.match_index = match_index
        factor = encoder.frame_encoder.downsample.factor
        aug = cfg.augment
        self.neural_aug = NeuralAugmenter(aug.neural.params(), table.frame_rate_hz, factor) if aug.enabled else None
        self.pose_aug = PoseAugmenter(aug.pose.params()) if aug.enabled else None
        self.needs_animals = cfg.method in ANIMAL_AWARE_METHODS or encoder.normalises_per_animal

    def __call__(self, starts: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Matched | None]:
        frames = self.table.window_frames(starts)
        matched = None
        if self.match_index is not None:
            # the whole window from another animal, centred on the pose-history match of its middle frame
            other = self.match_index.sample_runs(frames, 1.0, gen, self.cfg.swap.temperature)
            m_neural, _ = self.table.gather(other)
            if self.neural_aug is not None:
                m_neural = self.neural_aug(m_neural, gen)
            matched = (m_neural, self.table.frame_baselines(other), torch.from_numpy(self.table.animal[other.numpy()]))
        if self.swap_index is not None:
            swap = self.swap_index.sample_runs if self.cfg.swap.mode == "run" else self.swap_index.sample
            frames = swap(frames, self.cfg.swap.probability, gen, self.cfg.swap.temperature)
        neural, pose = self.table.gather(frames)
        baseline = self.table.frame_baselines(frames)
        method = self.cfg.method
        animals = torch.from_numpy(self.table.animal[frames.numpy()]) if self.needs_animals else None
        if method == "simclr":
            if self.neural_aug is None:
                return neural, neural.clone(), baseline, animals, None
            return self.neural_aug(neural, gen), self.neural_aug(neural, gen), baseline, animals, None
        if self.neural_aug is not None:
            neural = self.neural_aug(neural, gen)
        if method != "regression" and self.pose_aug is not None:
            pose = self.pose_aug(pose, gen)
        return neural, pose, baseline, animals, matched


# ---------------------------------------------------------------------------------------------
# set-up helpers


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device=cuda was asked for but no CUDA device is available")
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local % torch.cuda.device_count())
    return torch.device("cpu")


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _generator(seed: int, rank: int, epoch: int) -> torch.Generator:
    """Per (seed, rank, epoch): runs resume at an epoch boundary with the same random stream."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + rank) * 1_000_003 + epoch) % 2**63)


def build_encoder(cfg: TrainConfig, frame_shape: tuple[int, int]) -> NeuralEncoder:
    m = cfg.model
    model = build_model(
        m.name, frame_shape=list(frame_shape), window=m.window, pooled_size=m.pooled_size,
        downsample=m.downsample or None, normalise=m.normalise, channels=m.channels,
        features=m.features, temporal_channels=m.temporal_channels, embedding_dim=m.embedding_dim,
        animal_norm=m.animal_norm,
    )
    if not isinstance(model, NeuralEncoder):
        raise TrainingError(f"model {m.name!r} is not a NeuralEncoder")
    return model


def build_swap_index(cfg: TrainConfig, table: FrameTable) -> SwapIndex:
    desc = pose_descriptors(table.pose, cfg.swap.descriptor_steps, cfg.swap.descriptor_dims)
    desc = with_history(desc, table.trial, cfg.swap.history, cfg.swap.history_samples)
    return SwapIndex.build(desc, table.animal, cfg.swap.k, trial=table.trial)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5 % of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# embedding + head


@torch.no_grad()
def frame_features(encoder: NeuralEncoder, table: FrameTable, frames: np.ndarray, device: torch.device,
                   batch: int = 1024, raw: bool = False) -> Tensor:
    """Per-frame features (N, F) of table frames, frozen encoder in eval mode, each frame with its
    own animal's calibration (`raw`: before the per-animal feature normalisation)."""
    frame_encoder = encoder.eval().frame_encoder
    out = []
    for i in range(0, len(frames), batch):
        part = frames[i : i + batch]
        x = torch.from_numpy(np.ascontiguousarray(table.pooled[part])).to(device).unsqueeze(1)
        baseline = table.frame_baselines(part)
        if baseline is not None:
            baseline = baseline.unsqueeze(1).to(device)
        if raw or frame_encoder.animal_norm is None:
            out.append(frame_encoder.raw_features(x, baseline))
            continue
        mean, std = table.frame_feature_statistics(part)
        if mean is None or std is None:
            raise TrainingError("per-animal feature statistics are not measured yet (measure_animal_statistics)")
        out.append(frame_encoder.encode_pooled(x, baseline, feature_mean=mean.to(device), feature_std=std.to(device)))
    return torch.cat(out)


@torch.no_grad()
def embed_windows(encoder: NeuralEncoder, table: FrameTable, starts: np.ndarray,
                  device: torch.device, batch: int = 1024, raw: bool = False) -> np.ndarray:
    """Embeddings (M, D) of the windows starting at `starts`, frozen encoder in eval mode, with
    each animal's normalisation statistics (`raw`: the embedding before its per-animal
    normalisation). Each frame is encoded once, then the temporal part runs over the windows
    (the same streaming split the daemon uses; identical to `forward` in eval mode)."""
    encoder = encoder.eval()
    needed = np.unique((starts[:, None] + np.arange(table.window)).ravel())
    position = np.full(table.n_frames, -1, dtype=np.int64)
    position[needed] = np.arange(len(needed))
    all_feats = frame_features(encoder, table, needed, device, batch)
    out = []
    for i in range(0, len(starts), batch):
        s = starts[i : i + batch]
        idx = torch.from_numpy(position[s[:, None] + np.arange(table.window)]).to(device)
        if raw or encoder.temporal.animal_norm is None:
            out.append(encoder.temporal.raw_embedding(all_feats[idx]).cpu())
            continue
        mean, std = table.window_embedding_statistics(s)
        if mean is None or std is None:
            raise TrainingError("per-animal embedding statistics are not measured yet (measure_animal_statistics)")
        out.append(encoder.temporal(all_feats[idx], mean=mean.to(device), std=std.to(device)).cpu())
    return torch.cat(out).numpy()


def measure_animal_statistics(encoder: NeuralEncoder, table: FrameTable, device: torch.device) -> None:
    """After training: every training animal's statistics for the per-animal normalisation (its
    features over its frames, then its embedding over its windows, at most `MAX_FRAMES` of each
    spread evenly), into the table and into the animal's calibration (the checkpoint keeps them)."""
    from dataclasses import replace

    from trainer.alignment import evenly_spaced
    from trainer.calibration import standardisation

    frame_encoder, temporal = encoder.frame_encoder, encoder.temporal
    stats: dict[str, dict[str, np.ndarray]] = {name: {} for name in table.animals}
    if frame_encoder.animal_norm is not None:
        for a, name in enumerate(table.animals):
            idx = np.flatnonzero(table.animal == a)
            feats = frame_features(encoder, table, idx[evenly_spaced(len(idx))], device, raw=True)
            stats[name]["feature_mean"], stats[name]["feature_std"] = standardisation(feats.cpu(), frame_encoder.animal_norm.eps)
        table.feature_mean = np.stack([stats[n]["feature_mean"] for n in table.animals])
        table.feature_std = np.stack([stats[n]["feature_std"] for n in table.animals])
    if temporal.animal_norm is not None:
        for a, name in enumerate(table.animals):
            starts = table.starts[table.animal[table.starts] == a]
            emb = embed_windows(encoder, table, starts[evenly_spaced(len(starts))], device, raw=True)
            stats[name]["embedding_mean"], stats[name]["embedding_std"] = standardisation(
                torch.from_numpy(emb), temporal.animal_norm.eps)
        table.embedding_mean = np.stack([stats[n]["embedding_mean"] for n in table.animals])
        table.embedding_std = np.stack([stats[n]["embedding_std"] for n in table.animals])
    for name in table.animals:
        table.calibrations[name] = replace(table.calibrations[name], **stats[name])


def fit_head(encoder: NeuralEncoder, table: FrameTable, device: torch.device, c: float) -> tuple[LinearProbe, float]:
    """Linear action head on the frozen embeddings of every labelled training window."""
    labels = table.window_labels()
    starts = table.starts[labels >= 0]
    emb = embed_windows(encoder, table, starts, device)
    y = labels[labels >= 0]
    probe = LinearProbe(c=c).fit(emb, y, n_classes=len(table.class_names))
    return probe, probe.accuracy(emb, y)


# ---------------------------------------------------------------------------------------------
# the loop


def train(cfg: TrainConfig, data_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
          resume: bool = False, stop_after_epoch: int | None = None) -> TrainResult:
    """Train `cfg.method` on the trials in `data_dir`; write `out_dir/checkpoint.pt` (contract
    format), `state.pt` (resumable), `metrics.json` and `loss.png`. Returns the checkpoint path and
    metrics. With `resume`, continues from `out_dir/state.pt` (same method, model and data).
    `stop_after_epoch` ends this run early (the schedule still spans `optim.epochs`), for jobs cut
    into time slices; a later `resume` finishes it exactly as one uninterrupted run would."""
    out = Path(out_dir)
    device = _device(cfg)
    dd = _init_distributed(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _seed_all(cfg.seed)

    paths = select_trials(list_trials(data_dir), cfg.data.animals, cfg.data.exclude_animals)
    with open_trial(paths[0]) as first:
        frame_shape = first.frame_shape
    encoder = build_encoder(cfg, frame_shape)
    table = build_frame_table(paths, encoder.frame_encoder, encoder.window, cfg.data.pose_steps,
                              cfg.swap.remove_animal_mean, cache_dir=Path(cfg.data.cache_dir) if cfg.data.cache_dir else None,
                              progress=cfg.progress and dd.main, body_anchor=cfg.data.body_anchor)
    if len(table.body_anchor) == len(table.joint_names) > 1 and not cfg.data.body_anchor:
        log.warning("pose normalisation centres each frame on the mean of all joints: the skeleton names no body "
                    "anchor (DeepFly3D *_ThC, or thorax, body, centroid, centre); set data.body_anchor=[...] to "
                    "joints fixed to the body", joints=table.joint_names)
    if encoder.frame_encoder.session is not None:
        calibrate_table(table, progress=cfg.progress and dd.main)
        log.info("session calibration", **{name: c.summary() for name, c in table.calibrations.items()})
    if not table.class_names or not (table.window_labels() >= 0).any():
        raise TrainingError(f"{data_dir}: no labelled windows; the checkpoint's action head needs labels")
    if cfg.method in SWAPPING_METHODS and len(table.animals) < 2:
        raise TrainingError(f"method {cfg.method!r} swaps across animals and needs at least 2 training animals; "
                            "use method=contrastive_noswap for one animal")
    fingerprint = dataset_fingerprint(paths)
    t0 = time.perf_counter()
    swapping = cfg.method in SWAPPING_METHODS and cfg.swap.probability > 0
    cross_animal = cfg.method in CONTRASTIVE_METHODS and cfg.cross_animal.weight > 0
    if cross_animal and len(table.animals) < 2:
        # the default pairs animals; with one animal there is nothing to pair, so the term is off
        log.warning("cross-animal positives off: they pair windows of different animals and there is one "
                    "training animal", animals=table.animals)
        cross_animal = False
    index = build_swap_index(cfg, table) if swapping or cross_animal else None
    swap_index = index if swapping else None
    swap_build_s = time.perf_counter() - t0
    log.info("training set", method=cfg.method, **table.summary(), swap_index_s=round(swap_build_s, 2),
             rank=dd.rank, world=dd.world, device=str(device))

    objective = Objective(cfg, encoder, len(table.joint_names), table.window * table.pose_steps,
                          len(table.animals)).to(device)
    make_batch = BatchMaker(cfg, table, encoder, swap_index, index if cross_animal else None)
    batch = cfg.optim.batch_size
    steps = cfg.optim.steps_per_epoch or max(1, table.n_windows // (batch * dd.world))
    total_steps = steps * cfg.optim.epochs
    optimizer = torch.optim.AdamW(objective.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    warmup = min(steps, max(1, total_steps // 20))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, total_steps, warmup))

    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume:
        start_epoch, history = _load_state(out / STATE, cfg, fingerprint, objective, optimizer, scheduler)
    model: nn.Module = objective
    if dd.world > 1:
        model = nn.parallel.DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    out.mkdir(parents=True, exist_ok=True)

    last_epoch = cfg.optim.epochs if stop_after_epoch is None else min(cfg.optim.epochs, stop_after_epoch)
    for epoch in range(start_epoch, last_epoch):
        gen = _generator(cfg.seed, dd.rank, epoch)
        order = torch.randperm(table.n_windows, generator=_generator(cfg.seed, 0, epoch))  # same on all ranks
        model.train()
        losses: list[float] = []
        n_windows = 0
        t_epoch = time.perf_counter()
        bar = tqdm(range(steps), desc=f"{cfg.method} epoch {epoch + 1}/{cfg.optim.epochs}", unit="step",
                   disable=not (cfg.progress and dd.main), leave=False)
        for step in bar:
            pos = (step * dd.world + dd.rank) * batch
            idx = torch.arange(pos, pos + batch) % table.n_windows  # wraps when steps exceed one pass
            starts = torch.from_numpy(table.starts)[order[idx]]
            neural, other, baseline, animals, matched = make_batch(starts, gen)
            if baseline is not None:
                baseline = baseline.to(device, non_blocking=True)
            if animals is not None:
                animals = animals.to(device, non_blocking=True)
            if matched is not None:
                matched = tuple(None if t is None else t.to(device, non_blocking=True) for t in matched)
            loss = model(neural.to(device, non_blocking=True), other.to(device, non_blocking=True), baseline, animals,
                         matched)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at epoch {epoch + 1} step {step + 1}; "
                                    f"lower optim.lr (now {cfg.optim.lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            n_windows += len(starts)
            elapsed = time.perf_counter() - t_epoch
            bar.set_postfix(loss=f"{losses[-1]:.3f}", win_s=f"{n_windows * dd.world / elapsed:.0f}")
        bar.close()
        epoch_s = time.perf_counter() - t_epoch
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "epoch_s": epoch_s,
                  "windows_per_s": n_windows * dd.world / epoch_s, "lr": scheduler.get_last_lr()[0]}
        history.append(record)
        log.info("epoch", method=cfg.method, **{k: round(v, 4) for k, v in record.items()})
        if dd.main:
            _atomic_save({"epoch": epoch + 1, "objective": objective.state_dict(),
                          "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "config": cfg.model_dump(mode="json"), "fingerprint": fingerprint,
                          "history": history}, out / STATE)

    result = None
    if dd.main:
        result = _finish(cfg, table, objective, device, history, fingerprint, out, dd, swap_build_s, cross_animal)
    if dd.world > 1:
        dist.barrier()
    if result is None:  # other ranks: report where rank 0 wrote the checkpoint
        result = TrainResult(out / CHECKPOINT, {"history": history})
    result.encoder = encoder.eval()
    return result


def _load_state(path: Path, cfg: TrainConfig, fingerprint: str, objective: Objective,
                optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[int, list[dict[str, float]]]:
    if not path.is_file():
        raise TrainingError(f"cannot resume: {path} does not exist (train without --resume first)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file; name it
        raise TrainingError(f"cannot resume: {path} is not a readable training state ({exc})") from None
    saved = state.get("config", {})
    for key in ("method", "model"):
        if saved.get(key) != cfg.model_dump(mode="json")[key]:
            raise TrainingError(f"cannot resume {path}: its {key!r} differs from this run's "
                                f"({saved.get(key)} vs {cfg.model_dump(mode='json')[key]})")
    if state.get("fingerprint") != fingerprint:
        raise TrainingError(f"cannot resume {path}: it was trained on a different dataset")
    objective.load_state_dict(state["objective"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    log.info("resumed", path=str(path), epoch=state["epoch"])
    return int(state["epoch"]), list(state["history"])


def _cpu_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _projection_of(objective: Objective) -> dict[str, Any] | None:
    head = getattr(objective, "proj_neural", None)
    if head is None:
        return None
    return {"model_name": "projection", "model_args": dict(head.model_args), "state_dict": _cpu_state(head)}


def _finish(cfg: TrainConfig, table: FrameTable, objective: Objective, device: torch.device,
            history: list[dict[str, float]], fingerprint: str, out: Path, dd: Dist,
            swap_build_s: float, cross_animal: bool) -> TrainResult:
    t0 = time.perf_counter()
    encoder = objective.encoder
    if encoder.normalises_per_animal:
        measure_animal_statistics(encoder, table, device)
    probe, head_acc = fit_head(encoder, table, device, cfg.probe_c)
    head = probe.head()
    metrics: dict[str, Any] = {
        "method": cfg.method,
        "final_loss": history[-1]["loss"] if history else float("nan"),
        "train_throughput_windows_per_s": float(np.mean([h["windows_per_s"] for h in history])) if history else 0.0,
        "epoch_time_s": float(np.mean([h["epoch_s"] for h in history])) if history else 0.0,
        "epochs": len(history),
        "head_train_accuracy": head_acc,
        "head_fit_s": time.perf_counter() - t0,
        "swap_index_build_s": swap_build_s,
        "cross_animal_positives": cross_animal,
        "world_size": dd.world,
        "device": str(device),
        "dataset": table.summary(),
        "training_animals": table.animals,
        "history": history,
    }
    ckpt = {
        "model_name": encoder.registry_name,  # type: ignore[attr-defined]
        "model_args": encoder.model_args,
        "state_dict": _cpu_state(encoder),
        "head": {"weight": torch.from_numpy(head["weight"]), "bias": torch.from_numpy(head["bias"])},
        "class_names": list(table.class_names),
        "window": encoder.window,
        "frame_shape": list(table.frame_shape),
        "frame_dtype": table.frame_dtype,
        "frame_rate_hz": table.frame_rate_hz,
        "preprocessing": encoder.preprocessing(),
        # session normalisation: the template new animals are aligned to, and every training
        # animal's calibration (export bakes one of them, or a new animal's, into the graph)
        "calibration": None if table.template is None else {
            "template": table.template.tolist(),
            "animals": {name: c.to_dict() for name, c in table.calibrations.items()},
        },
        # the neural projection head of the contrastive loss (evaluation only: identity measured
        # where the loss works, too); None for methods without one
        "projection": _projection_of(objective),
        "dataset_fingerprint": fingerprint,
        "metrics": metrics,
        "config": cfg.model_dump(mode="json"),
    }
    _atomic_save(ckpt, out / CHECKPOINT)
    tmp = out / f".{METRICS}.tmp"
    tmp.write_text(json.dumps(metrics, indent=2))
    os.replace(tmp, out / METRICS)
    _plot_loss(history, cfg.method, out / LOSS_PLOT)
    log.info("checkpoint written", path=str(out / CHECKPOINT), head_train_accuracy=round(head_acc, 4),
             windows_per_s=round(metrics["train_throughput_windows_per_s"], 1))
    return TrainResult(out / CHECKPOINT, metrics)


def _plot_loss(history: list[dict[str, float]], method: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_title(f"{method}")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
