"""Models of the trainer, registered by name: `build_model(name, **args)`.

Registered names:
    neural_conv      NeuralEncoder: raw frame window -> embedding (frame_encoder + temporal parts)
    pose_conv        PoseEncoder: normalised pose window -> embedding
    projection       ProjectionHead: embedding -> unit-norm projection for contrastive losses
    pose_regression  PoseRegressionHead: embedding -> pose window (regression baseline)
"""

from __future__ import annotations

from trainer.models.heads import PoseRegressionHead, ProjectionHead
from trainer.models.neural import Downsample, FrameEncoder, NeuralEncoder, Normalise, TemporalEncoder
from trainer.models.pose import PoseEncoder
from trainer.models.registry import MODELS, build_model, register

DEFAULT_NEURAL_MODEL = "neural_conv"

__all__ = [
    "DEFAULT_NEURAL_MODEL",
    "MODELS",
    "Downsample",
    "FrameEncoder",
    "NeuralEncoder",
    "Normalise",
    "PoseEncoder",
    "PoseRegressionHead",
    "ProjectionHead",
    "TemporalEncoder",
    "build_model",
    "register",
]
