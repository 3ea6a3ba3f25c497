"""Heads used during training only: projection to the contrastive space, pose regression."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.registry import register


@register("projection")
class ProjectionHead(nn.Module):
    """Embedding (B, D) -> unit-norm projection (B, P), SimCLR-style two-layer MLP.

    The loss works on the projection; the linear action probe works on the embedding before it
    (the projection discards what the contrastive task does not need)."""

    def __init__(self, embedding_dim: int = 64, hidden: int = 64, out_dim: int = 32) -> None:
        super().__init__()
        self.model_args: dict[str, Any] = {
            "embedding_dim": int(embedding_dim), "hidden": int(hidden), "out_dim": int(out_dim),
        }
        self.net = nn.Sequential(
            nn.Linear(embedding_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim),
        )

    def forward(self, embedding: Tensor) -> Tensor:
        return F.normalize(self.net(embedding), dim=-1)


@register("pose_regression")
class PoseRegressionHead(nn.Module):
    """Embedding (B, D) -> a pose window (B, T, J, 3) for the regression baseline.

    The temporal model of the regression baseline is the encoder's own 1-D convolution stack;
    this head only maps its embedding to the (normalised) pose window."""

    def __init__(self, embedding_dim: int, steps: int, joints: int, hidden: int = 128) -> None:
        super().__init__()
        self.steps, self.joints = int(steps), int(joints)
        self.model_args: dict[str, Any] = {
            "embedding_dim": int(embedding_dim), "steps": self.steps, "joints": self.joints,
            "hidden": int(hidden),
        }
        self.net = nn.Sequential(
            nn.Linear(embedding_dim, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, self.steps * self.joints * 3),
        )

    def forward(self, embedding: Tensor) -> Tensor:
        return self.net(embedding).unflatten(-1, (self.steps, self.joints, 3))
