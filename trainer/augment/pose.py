"""Behaviour augmentations on normalised pose windows (B, T, J, 3).

Poses here are already normalised (`trainer.swapping.normalise_poses`: centred per frame, unit
scale per animal), so strengths are fractions of the body's size. Pure functions of the input
and an explicit `torch.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def _check(poses: Tensor) -> None:
    if poses.dim() != 4 or poses.shape[-1] != 3:
        raise ValueError(f"pose augmentations take (B, T, J, 3) windows, got {tuple(poses.shape)}")


def pose_noise(poses: Tensor, gen: torch.Generator, std: float) -> Tensor:
    """Independent Gaussian jitter on every coordinate (3D triangulation noise)."""
    _check(poses)
    return poses + std * torch.randn(poses.shape, generator=gen, device=gen.device).to(poses.device)


def joint_dropout(poses: Tensor, gen: torch.Generator, probability: float) -> Tensor:
    """Each joint of each frame is lost with `probability` (a failed 2D detection) and set to the
    body centre (0 after normalisation), so the encoder cannot rely on any single joint."""
    _check(poses)
    keep = torch.rand(poses.shape[:-1], generator=gen, device=gen.device) >= probability
    return poses * keep.unsqueeze(-1).to(poses.device, poses.dtype)


@dataclass(frozen=True)
class PoseAugmentParams:
    """Strengths; 0 switches an augmentation off."""

    noise_std: float = 0.02       # fraction of the body's RMS radius
    joint_dropout: float = 0.05   # probability per joint per frame


class PoseAugmenter:
    def __init__(self, params: PoseAugmentParams) -> None:
        self.p = params

    def __call__(self, poses: Tensor, gen: torch.Generator) -> Tensor:
        if self.p.noise_std > 0:
            poses = pose_noise(poses, gen, self.p.noise_std)
        if self.p.joint_dropout > 0:
            poses = joint_dropout(poses, gen, self.p.joint_dropout)
        return poses
