"""Training losses: symmetric cross-modal InfoNCE, NT-Xent (SimCLR), pose regression.

All take unit-norm projections where a similarity is involved (the projection heads normalise).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_pair(a: Tensor, b: Tensor, temperature: float) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"need two (N, P) batches of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < 2:
        raise ValueError("a contrastive batch needs at least 2 pairs (the others are the negatives)")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def info_nce(z_neural: Tensor, z_behaviour: Tensor, temperature: float = 0.1) -> Tensor:
    """Symmetric InfoNCE between paired neural and behaviour projections (N, P), unit norm.

    L(n->b) = -1/N sum_i log( exp(<z_b^i, z_n^i>/tau) / sum_k exp(<z_b^k, z_n^i>/tau) ), and
    L(b->n) with the roles swapped; returns (L(n->b) + L(b->n)) / 2. Row i of each batch is a
    positive pair, every other row of the other modality a negative. Means over the batch (not
    sums) keep the scale independent of the batch size.
    """
    _check_pair(z_neural, z_behaviour, temperature)
    logits = z_neural @ z_behaviour.T / temperature  # [i, k] = <z_n^i, z_b^k> / tau
    target = torch.arange(z_neural.shape[0], device=z_neural.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def nt_xent(z_a: Tensor, z_b: Tensor, temperature: float = 0.1) -> Tensor:
    """NT-Xent (SimCLR): two augmented views (N, P) each, unit norm. Each of the 2N views has
    one positive (its other view) and 2N-2 negatives; self-similarity is excluded."""
    _check_pair(z_a, z_b, temperature)
    n = z_a.shape[0]
    z = torch.cat([z_a, z_b], dim=0)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)


def pose_regression_loss(predicted: Tensor, target: Tensor) -> Tensor:
    """Smooth-L1 between predicted and true normalised pose windows (robust to the occasional
    outlier joint of 3D pose estimation, which would dominate a squared error)."""
    if predicted.shape != target.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} poses differ in shape")
    return F.smooth_l1_loss(predicted, target, beta=0.1)


def animal_mmd(embedding: Tensor, animal: Tensor, scales: tuple[float, ...] = (0.25, 1.0, 4.0)) -> Tensor:
    """Squared maximum mean discrepancy between each animal's embeddings and the rest of the batch,
    averaged over the animals present (multi-kernel Gaussian, as in deep adaptation networks).

    embedding: (N, D); animal: (N,) integer animal of every row. Kernel bandwidths are `scales`
    times the batch's median squared distance (detached), so the penalty does not depend on the
    embedding's overall scale. Near zero when every animal's embeddings are distributed alike
    (this biased estimate stays a little above); an animal offset (the identity the probe reads)
    makes it grow. 0 when the batch holds one animal.
    """
    if embedding.dim() != 2 or animal.shape != embedding.shape[:1]:
        raise ValueError(f"need (N, D) embeddings and (N,) animals, got {tuple(embedding.shape)} and {tuple(animal.shape)}")
    sq = torch.cdist(embedding, embedding).pow(2)
    bandwidth = sq.detach().median().clamp_min(1e-6)
    kernel = sum(torch.exp(-sq / (s * bandwidth)) for s in scales)
    animals = torch.unique(animal)
    if len(animals) < 2:
        return embedding.new_zeros(())
    terms = []
    for a in animals:
        mine = animal == a
        rest = ~mine
        k_mm = kernel[mine][:, mine].mean()
        k_rr = kernel[rest][:, rest].mean()
        k_mr = kernel[mine][:, rest].mean()
        terms.append(k_mm + k_rr - 2 * k_mr)
    return torch.stack(terms).mean()
