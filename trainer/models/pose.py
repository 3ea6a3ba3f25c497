"""The behaviour encoder f_b: a window of normalised 3D poses -> one embedding.

Input poses are already normalised by `trainer.swapping.normalise_poses` (global position and
scale removed). The encoder is offline only (never exported), so it pools over time and accepts
any window length.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from trainer.models.registry import register


@register("pose_conv")
class PoseEncoder(nn.Module):
    """Poses (B, T, J, 3) -> embedding (B, D): 1-D convolutions over time on the J*3 coordinates,
    one strided stage, mean over time, linear map."""

    def __init__(self, joints: int, embedding_dim: int = 64, channels: int = 64) -> None:
        super().__init__()
        if joints < 1:
            raise ValueError(f"joints must be >= 1, got {joints}")
        self.joints = int(joints)
        self.embedding_dim = int(embedding_dim)
        self.model_args: dict[str, Any] = {
            "joints": self.joints, "embedding_dim": self.embedding_dim, "channels": int(channels),
        }
        d_in = 3 * self.joints
        self.net = nn.Sequential(
            nn.Conv1d(d_in, channels, kernel_size=5, padding=2, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
            nn.Conv1d(channels, channels, kernel_size=5, padding=2, stride=2, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
            nn.Conv1d(channels, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Linear(channels, self.embedding_dim)

    def forward(self, poses: Tensor) -> Tensor:
        if poses.dim() != 4 or poses.shape[-2:] != (self.joints, 3):
            raise ValueError(f"poses must be (B, T, {self.joints}, 3), got {tuple(poses.shape)}")
        x = poses.flatten(2).transpose(1, 2)  # (B, J*3, T)
        return self.out(self.net(x).mean(dim=-1))
