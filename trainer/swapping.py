"""Cross-animal swapping: replace poses (and, consistently, neural frames) by similar poses of
another animal, so that positive pairs cross animals and identity stops helping the loss.

Pose normalisation (`normalise_poses`)
    Poses are compared after removing what differs between animals but says nothing about the
    action:
    1. global position: every frame is centred on its body anchor, the mean of joints fixed to
       the body (`body_anchor_joints`: the joints named in `data.body_anchor`; else DeepFly3D's
       thorax-coxa ``*_ThC`` joints; else a joint named like the body's centre, e.g. ``thorax``,
       ``body``, ``centroid``; else, announced by the trainer, the mean of all joints, which moves
       with the limbs and so leaves some posture in the position); the limbs' motion is kept
       relative to the body. Any skeleton works: joints are only ever indexed by position;
    2. global scale: each animal's poses are divided by that animal's median (over its frames)
       RMS distance of the joints from the anchor, so limb-length differences vanish but a
       frame's own posture (legs stretched or folded) is kept;
    3. the animal's mean normalised pose is subtracted (`remove_animal_mean`, on by default in
       the training config): animals hold their legs slightly differently all the time, and that
       constant offset identifies the animal. Measured on the simulator's bench dataset (8
       animals), a linear probe names the animal from pose windows with 100 % accuracy without
       this step and 13.9 % (chance 12.5 %) with it, while cross-animal action accuracy from pose
       rises from 86.8 to 91.1 %. An identity-carrying pose embedding would hand the contrastive
       loss a shortcut (match the animal first) that rewards identity in the neural embedding;
       nearest neighbours would also prefer the wrong action in the right posture style. The
       price: the mean depends a little on how often the animal did each action.
    Orientation is not changed: the preparation is tethered under a fixed camera rig.

Swap descriptor (`pose_descriptors`)
    One vector per neural frame: the normalised pose segment of that frame's interval (the pose
    frames between the previous and this neural timestamp), subsampled to a few steps so that
    velocity, not only posture, is compared (forward and backward walking pass through the same
    postures), then projected on the leading principal components (`dims`) of all descriptors.
    Euclidean distances in that space approximate distances of the full segments.

Pose history (`with_history`, `swap.history`)
    A 2-photon frame is not a snapshot of the current pose: the indicator integrates spikes over
    its decay (0.5-1.5 s), so the frame shows what the animal did in the last second. A neighbour
    found from one frame's pose segment does the same thing *now* but often came from another
    past (the start of a walking bout matched to its middle), and its neural frame then shows
    other transients: a swap that teaches the encoder to ignore content. The descriptor therefore
    also holds the descriptors of a few earlier frames (`history` frames back, `history_samples`
    of them, clamped at the trial start), scaled by 1/sqrt(samples) so a distance is the RMS over
    the sampled times and the temperature keeps its meaning. Measured on the bench dataset
    (seed 0, 3,000 query frames, nearest neighbour in each other animal): the action label
    agrees at the frame itself 97.9 % (1 frame) vs 93.3 % (8 frames, 4 samples), and over the
    frame's past 8 frames 71.5 % vs 95.3 %.

Sampling (`SwapIndex`)
    The method asks, for a pose b_k of animal s, to pick an animal s_hat and then b_l from s_hat
    with P(b_l) = exp(-||b_l - b_k|| / T) / sum_m exp(-||b_m - b_k|| / T) (T = 1 in the paper).
    The exact sum runs over every frame of s_hat: for long recordings that is a full distance
    matrix per batch. Approximation: the sum is restricted to the k nearest frames of s_hat,
    found once before training (exact k-NN by blocked `torch.cdist` + `topk`). Frames beyond the
    k-th neighbour carry weight exp(-(d_k - d_1)/T) relative to the best one, negligible when the
    k-th neighbour is already far; `k` trades fidelity against memory (N x animals x k entries).
    Per batch, sampling is a few vectorised gathers and one `torch.multinomial`: no search.
    s_hat is drawn uniformly among the *other* animals (the paper draws among all animals; a
    draw of s itself would be a wasted, same-animal swap).

Run swapping (`SwapIndex.sample_runs`, `swap.mode = "run"`)
    Per-frame swapping makes a window a patchwork: every swapped frame jumps to another moment of
    another animal, so the calcium transients the temporal encoder reads are cut at every jump.
    The run variant swaps the same expected number of frames, but as one contiguous block per
    window: the block's middle frame gets its neighbour by the rule above, and the block is the
    stretch of the other animal's recording around that neighbour (kept inside its trial). At
    most two junctions per window; neural and pose stay paired frame by frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


# Joint names (lower case) taken as the body's centre when a skeleton has no DeepFly3D *_ThC joints.
BODY_CENTRE_NAMES = frozenset({"thorax", "body", "centroid", "center", "centre", "body_center", "body_centre",
                               "bodycenter", "mid_body", "midbody"})


def body_anchor_joints(joint_names: Sequence[str], anchor: Sequence[str] = ()) -> list[int]:
    """Indices of the joints whose mean is the body's position (module docstring): the joints
    named in `anchor`; else DeepFly3D's ``*_ThC``; else those named in BODY_CENTRE_NAMES; else all.
    Raises ValueError for an `anchor` name the skeleton lacks."""
    names = list(joint_names)
    if anchor:
        unknown = [a for a in anchor if a not in names]
        if unknown:
            raise ValueError(f"body anchor joints {unknown} are not in the recording's skeleton "
                             f"({', '.join(names)}); set data.body_anchor to some of these")
        return [names.index(a) for a in anchor]
    idx = [i for i, name in enumerate(names) if name.endswith("_ThC")]
    idx = idx or [i for i, name in enumerate(names) if name.lower() in BODY_CENTRE_NAMES]
    return idx or list(range(len(names)))


def animal_scale(poses: np.ndarray, anchor: Sequence[int]) -> float:
    """Median over frames of the RMS joint distance from the body anchor: one number per animal."""
    centred = poses - poses[..., list(anchor), :].mean(axis=-2, keepdims=True)
    rms = np.sqrt((centred**2).sum(axis=-1).mean(axis=-1))
    scale = float(np.median(rms))
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"cannot normalise poses: their scale is {scale} (all joints at one point?)")
    return scale


def normalise_poses(poses: np.ndarray, anchor: Sequence[int], scale: float,
                    mean_pose: np.ndarray | None = None) -> np.ndarray:
    """(..., J, 3) poses in mm -> centred on the body anchor, divided by the animal's `scale`,
    minus `mean_pose` (J, 3) when given. See the module docstring."""
    out = (poses - poses[..., list(anchor), :].mean(axis=-2, keepdims=True)) / scale
    if mean_pose is not None:
        out = out - mean_pose
    return out.astype(np.float32)


def _spread(n: int, count: int) -> np.ndarray:
    """At most `count` distinct indices of range(n), evenly spread from 0 to n - 1 (rounded)."""
    return np.unique(np.linspace(0, n - 1, num=min(count, n)).round().astype(int))


def pose_descriptors(segments: np.ndarray, steps: int = 3, dims: int = 32) -> np.ndarray:
    """(N, S, J, 3) normalised pose segments -> (N, d) swap descriptors (module docstring)."""
    n, s = segments.shape[:2]
    pick = _spread(s, steps)
    flat = torch.from_numpy(np.ascontiguousarray(segments[:, pick].reshape(n, -1), dtype=np.float32))
    if flat.shape[1] <= dims:
        return flat.numpy()
    mean = flat.mean(dim=0, keepdim=True)
    centred = flat - mean
    # principal axes from the covariance of a subsample (eigh of a d x d matrix: fast, and
    # bounded cost on big datasets)
    sub = centred[torch.linspace(0, n - 1, steps=min(n, 20000)).long()].double()
    _, vecs = torch.linalg.eigh(sub.T @ sub)
    axes = vecs[:, -dims:].flip(1).float()  # leading components first
    return (centred @ axes).contiguous().numpy()


def trial_bounds(trial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) labels of contiguous trials -> (first, last) (N,) int64: the first and last index of
    every frame's trial."""
    n = len(trial)
    change = np.ones(n, dtype=bool)
    change[1:] = trial[1:] != trial[:-1]
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:] - 1, n - 1)
    run = np.cumsum(change) - 1
    return starts[run].astype(np.int64), ends[run].astype(np.int64)


def with_history(descriptors: np.ndarray, trial: np.ndarray, history: int, samples: int = 4) -> np.ndarray:
    """(N, d) per-frame descriptors -> (N, d * L): each frame's own and earlier frames'
    descriptors, L = min(samples, history) times evenly spread over the last `history` frames
    (clamped at the first frame of the frame's trial), scaled by 1/sqrt(L) (module docstring).
    `trial` (N,) labels contiguous trials. history = 1 returns `descriptors` unchanged."""
    if history < 1 or samples < 1:
        raise ValueError(f"history and samples must be >= 1, got {history} and {samples}")
    if history == 1:
        return descriptors
    n = len(descriptors)
    trial = np.asarray(trial)
    if trial.shape != (n,):
        raise ValueError(f"trial has shape {trial.shape}, expected ({n},)")
    first, _ = trial_bounds(trial)
    lags = _spread(history, samples)
    rows = np.arange(n)
    parts = [descriptors[np.maximum(rows - lag, first)] for lag in lags]
    return (np.concatenate(parts, axis=1) / np.sqrt(len(lags))).astype(np.float32)


@dataclass
class SwapIndex:
    """Precomputed k nearest neighbours of every frame in every animal.

    neighbours[i, a, j]: global index of the j-th nearest frame of animal `a` to frame i;
    distances[i, a, j]: its descriptor distance. The slot of a frame's own animal is unused.
    """

    neighbours: Tensor  # (N, A, k) int64
    distances: Tensor   # (N, A, k) float32
    animal: Tensor      # (N,) int64 animal index of every frame
    n_animals: int
    # first and last global frame of every frame's trial (run swapping stays inside a trial)
    trial_first: Tensor | None = None
    trial_last: Tensor | None = None

    @classmethod
    def build(cls, descriptors: np.ndarray, animal: np.ndarray, k: int, block: int = 4096,
              trial: np.ndarray | None = None) -> SwapIndex:
        """k-NN of every frame in every animal. `trial` (N,) labels contiguous trials (needed by
        `sample_runs`)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        animal_t = torch.as_tensor(animal, dtype=torch.long)
        n_animals = int(animal_t.max().item()) + 1 if len(animal_t) else 0
        if n_animals < 2:
            raise ValueError("swapping needs frames of at least 2 animals")
        desc = torch.as_tensor(descriptors, dtype=torch.float32)
        n = desc.shape[0]
        members = [torch.nonzero(animal_t == a).squeeze(1) for a in range(n_animals)]
        k_eff = min(k, min(len(m) for m in members))
        if k_eff < 1:
            raise ValueError("every animal needs at least one frame to swap with")
        neighbours = torch.zeros(n, n_animals, k_eff, dtype=torch.long)
        distances = torch.full((n, n_animals, k_eff), float("inf"))
        for a, idx_a in enumerate(members):
            target = desc[idx_a]
            for start in range(0, n, block):
                q = desc[start : start + block]
                d, j = torch.topk(torch.cdist(q, target), k_eff, dim=1, largest=False)
                neighbours[start : start + block, a] = idx_a[j]
                distances[start : start + block, a] = d
        first = last = None
        if trial is not None:
            first, last = (torch.from_numpy(b) for b in trial_bounds(np.asarray(trial)))
        return cls(neighbours, distances, animal_t, n_animals, first, last)

    def sample(self, frames: Tensor, probability: float, gen: torch.Generator,
               temperature: float = 1.0) -> Tensor:
        """Swap frames of windows `frames` (B, W) (global frame indices, one animal per window).

        Per window an animal s_hat != s is drawn uniformly; each frame is swapped with
        `probability` for one of its k nearest frames in s_hat, drawn with
        P ∝ exp(-distance / temperature). Returns the new (B, W) frame indices; neural frames and
        poses are then both gathered from them, so the two modalities stay paired."""
        b, w = frames.shape
        other = self._other_animal(frames, probability, gen)
        swap = torch.rand(b, w, generator=gen) < probability
        chosen = self._neighbour(frames, other.unsqueeze(1).expand(b, w), gen, temperature)
        return torch.where(swap, chosen, frames)

    def sample_runs(self, frames: Tensor, probability: float, gen: torch.Generator,
                    temperature: float = 1.0) -> Tensor:
        """Run swapping (module docstring): per window (B, W) of one animal, Binomial(W, p)
        frames in one contiguous block are replaced by the matching stretch of one other animal.
        Returns the new (B, W) frame indices."""
        if self.trial_first is None or self.trial_last is None:
            raise ValueError("run swapping needs the trial of every frame: build the index with trial=")
        b, w = frames.shape
        other = self._other_animal(frames, probability, gen)
        length = (torch.rand(b, w, generator=gen) < probability).sum(dim=1)  # Binomial(W, p)
        start = (torch.rand(b, generator=gen) * (w - length + 1).float()).long().clamp(max=w - 1)
        middle = (start + length // 2).clamp(max=w - 1)
        centre = self._neighbour(frames[torch.arange(b), middle], other, gen, temperature)
        first = centre - (middle - start)
        lo, hi = self.trial_first[centre], self.trial_last[centre]
        first = torch.maximum(first, lo)
        first = torch.minimum(first, hi - length + 1)
        fits = (length > 0) & (first >= lo)  # a trial shorter than the block: no swap
        position = torch.arange(w).unsqueeze(0)
        in_block = (position >= start.unsqueeze(1)) & (position < (start + length).unsqueeze(1)) & fits.unsqueeze(1)
        replacement = first.unsqueeze(1) + (position - start.unsqueeze(1))
        return torch.where(in_block, replacement, frames)

    def _other_animal(self, frames: Tensor, probability: float, gen: torch.Generator) -> Tensor:
        """One animal s_hat per window (B,), uniform over the animals other than the window's."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"swap probability must lie in [0, 1], got {probability}")
        own = self.animal[frames[:, 0]]
        draw = torch.randint(0, self.n_animals - 1, (len(frames),), generator=gen)
        return draw + (draw >= own).long()

    def _neighbour(self, anchors: Tensor, animals: Tensor, gen: torch.Generator, temperature: float) -> Tensor:
        """For every anchor frame, one of its k nearest frames in the paired animal, drawn with
        P ∝ exp(-distance / temperature); same shape as `anchors`."""
        weights = torch.softmax(-self.distances[anchors, animals] / temperature, dim=-1)
        choice = torch.multinomial(weights.reshape(-1, weights.shape[-1]), 1, generator=gen).view(*anchors.shape, 1)
        return torch.gather(self.neighbours[anchors, animals], -1, choice).squeeze(-1)
