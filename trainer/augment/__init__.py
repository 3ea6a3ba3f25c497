"""Augmentations: neural (2-photon image formation) and pose; pure functions + explicit generators."""

from __future__ import annotations

from trainer.augment.neural import (
    NeuralAugmenter,
    NeuralAugmentParams,
    brightness_baseline,
    calcium_kinetics,
    motion,
    read_noise,
    shot_noise,
)
from trainer.augment.pose import PoseAugmenter, PoseAugmentParams, joint_dropout, pose_noise

__all__ = [
    "NeuralAugmentParams",
    "NeuralAugmenter",
    "PoseAugmentParams",
    "PoseAugmenter",
    "brightness_baseline",
    "calcium_kinetics",
    "joint_dropout",
    "motion",
    "pose_noise",
    "read_noise",
    "shot_noise",
]
