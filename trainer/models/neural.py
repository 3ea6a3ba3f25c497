"""The neural encoder f_n: a window of raw 2-photon frames -> one embedding.

Built in two parts so the daemon can stream (docs/contracts.md, "Neural encoder"):

* `frame_encoder` (per frame, run once when a frame arrives):
  raw counts (B, H, W) float32
    -> `Downsample`  average-pool by an integer factor (still linear counts)
    -> `Normalise`   log1p, then per-frame standardisation (see below)
    -> small CNN     strided 3x3 convolutions, flattened map -> features (B, F)
    -> `AnimalNorm`  (optional) each feature standardised with the animal's own statistics
* `temporal` (per window, over the ring buffer): features (B, W, F) -> 1-D convolutions over
  time -> embedding (B, D) -> `AnimalNorm` (optional) on the embedding.

Why this preprocessing:
* Average pooling first: it is linear, so brightness/baseline changes, shot noise and
  sub-pixel shifts commute with it (exactly or nearly), which lets training cache pooled frames
  and augment them there while serving runs the very same modules on raw frames. It also
  averages shot noise before the nonlinearity and makes the per-frame cost independent of the
  microscope's resolution (256 x 256 -> 32 x 32 is an 8 x 8 pool).
* log1p turns the multiplicative gain differences between animals/sessions (laser power,
  indicator expression) into additive offsets, and per-frame standardisation (subtract the
  frame's mean, divide by its standard deviation) removes them. What remains is the spatial
  pattern of relative activity, which is what carries the action.

Why per-animal feature normalisation (`AnimalNorm`, domain-specific normalisation): after the
field of view is aligned and the pixel baseline removed, what still differs between animals is
mostly an offset and a scale of each feature (a different subset of neurons in view, different
gains); a linear probe reads identity from those alone. Standardising every feature with the
animal's own statistics removes them at the layer where they appear, before the temporal part
mixes frames; standardising the embedding too removes what the temporal part's nonlinearity
makes of the remaining differences (a linear probe reads identity from per-animal means of
the embedding). Training uses each animal's statistics in the batch (gradients flow through
them, as in batch normalisation, so the encoder cannot hide identity in an offset); serving uses
statistics measured on the animal's unlabelled calibration recording, baked into the graph. A
swapped window mixes frames of two animals, and each frame is normalised with its own animal's
statistics, so the patchwork lands in one shared feature space.

Every op has static shapes and no data-dependent control flow, so the parts export to ONNX.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.alignment import IDENTITY, sampling_grid
from trainer.models.registry import register

NormaliseMode = Literal["frame", "log", "session"]
AnimalNormMode = Literal["none", "features", "embedding", "both"]
ANIMAL_NORM_MODES = ("none", "features", "embedding", "both")

# log1p of the uint16 range is at most ~11.1; "log" mode maps counts into roughly [0, 1].
_LOG_UINT16 = 11.090355


class Downsample(nn.Module):
    """Average-pool raw frames (B, 1, H, W) by an integer `factor` (remainder rows/cols dropped)."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"downsample factor must be >= 1, got {factor}")
        self.factor = factor
        self.pool: nn.Module = (
            nn.AvgPool2d(kernel_size=factor, stride=factor) if factor > 1 else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x)


class Normalise(nn.Module):
    """log1p of non-negative counts, then per-frame standardisation ("frame"), a fixed scale
    ("log"), or the session calibration's per-pixel log baseline subtracted and then per-frame
    standardisation ("session")."""

    def __init__(self, mode: NormaliseMode = "frame", eps: float = 1e-3) -> None:
        super().__init__()
        if mode not in ("frame", "log", "session"):
            raise ValueError(f"normalise mode must be 'frame', 'log' or 'session', got {mode!r}")
        self.mode = mode
        self.eps = eps

    def forward(self, x: Tensor, baseline: Tensor | None = None) -> Tensor:
        x = torch.log1p(torch.clamp(x, min=0.0))
        if self.mode == "log":
            return x / _LOG_UINT16
        if self.mode == "session":
            if baseline is None:
                raise ValueError("session normalisation needs the calibration's per-pixel log baseline")
            x = x - baseline
        mean = x.mean(dim=(-2, -1), keepdim=True)
        centred = x - mean
        std = torch.sqrt((centred * centred).mean(dim=(-2, -1), keepdim=True) + self.eps)
        return centred / std


class SessionLayer(nn.Module):
    """A session calibration inside the graph (trainer/calibration.py): the sampling grid that
    aligns an animal's pooled frame to the template, and the per-pixel log1p baseline. Buffers,
    not parameters and not in the state dict: they describe the animal being decoded, not the
    model, and are set with `set_calibration` (training keeps them at identity and passes every
    frame's own animal's baseline instead)."""

    def __init__(self, pooled_shape: tuple[int, int]) -> None:
        super().__init__()
        h, w = pooled_shape
        self.register_buffer("grid", sampling_grid(IDENTITY, (h, w)), persistent=False)
        self.register_buffer("baseline", torch.zeros(1, 1, h, w), persistent=False)
        self.summary: dict[str, Any] = {}  # the installed calibration's; empty until one is set

    def set_calibration(self, calibration: Any) -> None:
        """Install a `trainer.calibration.SessionCalibration` of this encoder's pooled shape."""
        h, w = self.baseline.shape[-2:]
        if tuple(calibration.log_mean.shape) != (h, w):
            raise ValueError(f"calibration is {tuple(calibration.log_mean.shape)} but the encoder pools to {(h, w)}")
        self.grid.copy_(sampling_grid(calibration.alignment, (h, w)))
        self.baseline.copy_(torch.from_numpy(calibration.log_mean).view(1, 1, h, w))
        self.summary = calibration.summary()

    @property
    def calibrated(self) -> bool:
        return bool(self.summary)

    def align(self, pooled: Tensor) -> Tensor:
        """(B, 1, h, w) pooled counts of the calibrated animal -> template space (bilinear; edge
        pixels repeat outside its field, as in `trainer.alignment.warp`)."""
        grid = self.grid.expand(pooled.shape[0], -1, -1, -1)
        return F.grid_sample(pooled, grid, mode="bilinear", padding_mode="border", align_corners=False)


class AnimalNorm(nn.Module):
    """Per-animal standardisation of per-frame features (B, F).

    Three sources of statistics, in this order:
    * `animals` (B,) int: each animal's mean and std over its rows of this batch (training);
    * `mean`/`std` (B, F): given per row (embedding training windows with known animals);
    * otherwise the installed calibration's (buffers; the exported graph bakes them in).
    Buffers are not in the state dict: like `SessionLayer`'s, they describe the animal decoded.
    """

    def __init__(self, features: int, eps: float = 1e-3, scale: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.scale = scale  # False: centre only (the std is kept at 1)
        self.register_buffer("mean", torch.zeros(1, features), persistent=False)
        self.register_buffer("std", torch.ones(1, features), persistent=False)

    def set_statistics(self, mean: Any, std: Any) -> None:
        mean_t = torch.as_tensor(mean, dtype=torch.float32).view(1, -1)
        std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1)
        if mean_t.shape != self.mean.shape or std_t.shape != self.std.shape:
            raise ValueError(f"feature statistics are {tuple(mean_t.shape[1:])}/{tuple(std_t.shape[1:])} "
                             f"but the encoder has {self.mean.shape[1]} features")
        if not (torch.isfinite(mean_t).all() and torch.isfinite(std_t).all() and (std_t > 0).all()):
            raise ValueError("feature statistics must be finite with a positive std")
        self.mean.copy_(mean_t)
        self.std.copy_(std_t if self.scale else torch.ones_like(std_t))

    def forward(self, x: Tensor, animals: Tensor | None = None,
                mean: Tensor | None = None, std: Tensor | None = None) -> Tensor:
        if animals is not None:
            mean, std = batch_statistics(x, animals, self.eps)
        elif mean is None or std is None:
            mean, std = self.mean, self.std
        if not self.scale:
            return x - mean
        return (x - mean) / std


def batch_statistics(x: Tensor, groups: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-row mean and std (B, F) of the rows of `x` (B, F) that share the row's group."""
    n = int(groups.max()) + 1
    counts = torch.bincount(groups, minlength=n).clamp(min=1).to(x.dtype).unsqueeze(1)
    sums = torch.zeros(n, x.shape[1], dtype=x.dtype, device=x.device).index_add(0, groups, x)
    mean = (sums / counts)[groups]
    centred = x - mean
    var = torch.zeros(n, x.shape[1], dtype=x.dtype, device=x.device).index_add(0, groups, centred * centred)
    std = torch.sqrt((var / counts)[groups] + eps)
    return mean, std


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    # A strided 3x3 convolution halves the map itself: no full-resolution activation and no
    # max-pool pass, ~10x cheaper than conv + pool on CPU (these ops are memory-bound), and the
    # 3x3 kernel still covers every input pixel.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class FrameEncoder(nn.Module):
    """Raw frames (B, H, W) -> features (B, F). Preprocessing is its first layers."""

    def __init__(
        self,
        frame_shape: tuple[int, int],
        downsample: int,
        normalise: NormaliseMode,
        channels: tuple[int, ...],
        features: int,
        animal_norm: bool = False,
    ) -> None:
        super().__init__()
        h, w = frame_shape
        self.frame_shape = (int(h), int(w))
        self.downsample = Downsample(downsample)
        self.normalise = Normalise(normalise)
        self.pooled_shape = (h // downsample, w // downsample)
        self.session = SessionLayer(self.pooled_shape) if normalise == "session" else None
        ph, pw = self.pooled_shape
        # each conv block halves the map (stride 2, padding 1: ceil); the last map is flattened,
        # so position is kept
        if min(ph, pw) < 2 ** len(channels):
            ph = pw = 0
        for _ in channels:
            ph, pw = (ph + 1) // 2, (pw + 1) // 2
        if ph < 1 or pw < 1:
            raise ValueError(
                f"frame {h}x{w} downsampled by {downsample} is {self.pooled_shape}, too small for "
                f"{len(channels)} pooling stages; lower 'downsample' or use fewer channel stages"
            )
        blocks = []
        c_in = 1
        for c_out in channels:
            blocks.append(_conv_block(c_in, c_out))
            c_in = c_out
        self.cnn = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(c_in * ph * pw, features))
        self.features = features
        if animal_norm and self.session is None:
            raise ValueError("per-animal feature normalisation needs session normalisation (its statistics "
                             "are part of the animal's session calibration)")
        self.animal_norm = AnimalNorm(features) if animal_norm else None

    def set_calibration(self, calibration: Any) -> None:
        """Install one animal's `trainer.calibration.SessionCalibration`: its alignment and
        pixel baseline, and for encoders with per-animal feature normalisation its feature
        statistics (`trainer.calibration.calibrate_encoder` measures them)."""
        if self.session is None:
            raise ValueError("this encoder does not use session calibration")
        if self.animal_norm is not None:
            if calibration.feature_mean is None:
                raise ValueError("this encoder normalises features per animal, but the calibration has no "
                                 "feature statistics (measure them with trainer.calibration.calibrate_encoder)")
            self.animal_norm.set_statistics(calibration.feature_mean, calibration.feature_std)
        self.session.set_calibration(calibration)

    def preprocess(self, raw: Tensor) -> Tensor:
        """(B, H, W) raw counts -> (B, 1, h, w) pooled counts (linear; cacheable for training)."""
        return self.downsample(raw.unsqueeze(1))

    def raw_features(self, pooled: Tensor, baseline: Tensor | None = None) -> Tensor:
        """`encode_pooled` before the per-animal feature normalisation (what its statistics
        are measured on)."""
        if self.session is not None and baseline is None:
            baseline = self.session.baseline
        return self.cnn(self.normalise(pooled, baseline))

    def encode_pooled(self, pooled: Tensor, baseline: Tensor | None = None, animals: Tensor | None = None,
                      feature_mean: Tensor | None = None, feature_std: Tensor | None = None) -> Tensor:
        """(B, 1, h, w) pooled counts (in template space for "session" models) -> (B, F): the
        rest of `forward`, used on cached frames. `baseline` ((B, 1, h, w), session models
        only) is each frame's own calibration; by default the installed one. For encoders with
        per-animal normalisation, `animals` (B,) normalises with each animal's batch statistics
        (training), `feature_mean`/`feature_std` (B, F) with given ones; by default the
        installed calibration's."""
        features = self.raw_features(pooled, baseline)
        if self.animal_norm is None:
            return features
        return self.animal_norm(features, animals, feature_mean, feature_std)

    def forward(self, raw: Tensor) -> Tensor:
        pooled = self.preprocess(raw)
        if self.session is not None:
            pooled = self.session.align(pooled)
        return self.encode_pooled(pooled)


class TemporalEncoder(nn.Module):
    """Features (B, W, F) -> embedding (B, D): two 1-D convolutions over time, then a linear map
    of the flattened (time-ordered) maps, so the most recent frames can weigh differently; with
    `animal_norm`, the embedding standardised per animal (`AnimalNorm`)."""

    def __init__(self, window: int, features: int, channels: int, embedding_dim: int,
                 animal_norm: bool = False) -> None:
        super().__init__()
        self.window = window
        # centred, not scaled: per-animal scaling of the embedding cost ~9 points of held-out
        # accuracy on the bench data, centring none (docs/evaluation.md)
        self.animal_norm = AnimalNorm(embedding_dim, scale=False) if animal_norm else None
        self.net = nn.Sequential(
            nn.Conv1d(features, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
            nn.Conv1d(channels, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(channels * window, embedding_dim),
        )

    def raw_embedding(self, features: Tensor) -> Tensor:
        """The embedding before the per-animal normalisation (what its statistics are measured on)."""
        return self.net(features.transpose(1, 2))

    def forward(self, features: Tensor, animals: Tensor | None = None,
                mean: Tensor | None = None, std: Tensor | None = None) -> Tensor:
        """`animals` (B,): each window's animal, batch statistics (training); `mean`/`std`
        (B, D): given statistics; otherwise the installed calibration's."""
        embedding = self.raw_embedding(features)
        if self.animal_norm is None:
            return embedding
        return self.animal_norm(embedding, animals, mean, std)


@register("neural_conv")
class NeuralEncoder(nn.Module):
    """Window of raw frames (B, W, H, W) -> embedding (B, D); see the module docstring.

    Arguments (all stored in `model_args`, JSON-serialisable):
        frame_shape: (H, W) of the raw microscope frames.
        window: W, the receptive field in neural frames (the daemon sizes its ring buffer by it).
        downsample: integer average-pool factor; `None` picks the largest factor that keeps the
            shorter side >= `pooled_size`.
        pooled_size: target of the automatic `downsample` choice.
        normalise: "frame" (log1p + per-frame standardisation), "log" (log1p / log(65536)) or
            "session" (align to the template, log1p minus the session's per-pixel baseline, then
            per-frame standardisation: trainer/calibration.py).
        channels: CNN channels per stage (each stage halves the map).
        features: F, per-frame feature size.
        temporal_channels: width of the temporal convolutions.
        embedding_dim: D.
        animal_norm: where to standardise with the animal's own statistics (`AnimalNorm`; needs
            "session" normalisation): "none", "features" (per frame), "embedding", or "both".
    """

    def __init__(
        self,
        frame_shape: tuple[int, int] | list[int],
        window: int = 8,
        downsample: int | None = None,
        pooled_size: int = 32,
        normalise: NormaliseMode = "frame",
        channels: tuple[int, ...] | list[int] = (16, 32, 64),
        features: int = 64,
        temporal_channels: int = 64,
        embedding_dim: int = 64,
        animal_norm: AnimalNormMode = "none",
    ) -> None:
        super().__init__()
        if len(frame_shape) != 2 or min(frame_shape) < 1:
            raise ValueError(f"frame_shape must be (H, W) with positive sizes, got {frame_shape!r}")
        if window < 1:
            raise ValueError(f"window must be >= 1 frame, got {window}")
        h, w = int(frame_shape[0]), int(frame_shape[1])
        if downsample is None:
            downsample = max(1, min(h, w) // pooled_size)
        if animal_norm not in ANIMAL_NORM_MODES:
            raise ValueError(f"animal_norm must be one of {ANIMAL_NORM_MODES}, got {animal_norm!r}")
        self.window = int(window)
        self.frame_shape = (h, w)
        self.embedding_dim = int(embedding_dim)
        self.model_args: dict[str, Any] = {
            "frame_shape": [h, w],
            "window": self.window,
            "downsample": int(downsample),
            "pooled_size": int(pooled_size),
            "normalise": normalise,
            "channels": [int(c) for c in channels],
            "features": int(features),
            "temporal_channels": int(temporal_channels),
            "embedding_dim": self.embedding_dim,
            "animal_norm": animal_norm,
        }
        self.frame_encoder = FrameEncoder((h, w), int(downsample), normalise, tuple(channels), features,
                                          animal_norm in ("features", "both"))
        self.temporal = TemporalEncoder(self.window, features, temporal_channels, self.embedding_dim,
                                        animal_norm in ("embedding", "both"))
        if animal_norm != "none" and normalise != "session":
            raise ValueError("per-animal normalisation needs session normalisation (its statistics are part "
                             "of the animal's session calibration)")

    @property
    def features(self) -> int:
        return self.frame_encoder.features

    @property
    def pooled_shape(self) -> tuple[int, int]:
        return self.frame_encoder.pooled_shape

    def preprocessing(self) -> dict[str, Any]:
        """What the frame encoder's first layers do to raw frames (recorded in checkpoints/bundles)."""
        return {
            "input": "raw microscope counts cast to float32, shape (H, W)",
            "downsample": {"op": "average_pool", "factor": self.frame_encoder.downsample.factor},
            "pooled_shape": list(self.pooled_shape),
            "normalise": {
                "op": {"frame": "log1p_then_frame_standardise", "log": "log1p_scaled",
                       "session": "align_then_log1p_minus_session_baseline_then_frame_standardise"}[self.frame_encoder.normalise.mode],
                "mode": self.frame_encoder.normalise.mode,
                "eps": self.frame_encoder.normalise.eps,
            },
            **({"session_calibration": self.frame_encoder.session.summary}
               if self.frame_encoder.session is not None and self.frame_encoder.session.calibrated else {}),
            **({"animal_normalisation": {"op": "per_animal_standardise", "where": self.model_args["animal_norm"],
                                         "statistics": "session calibration"}}
               if self.model_args["animal_norm"] != "none" else {}),
            "inside_graph": True,
        }

    @property
    def normalises_per_animal(self) -> bool:
        return self.model_args["animal_norm"] != "none"

    def set_calibration(self, calibration: Any) -> None:
        """Install one animal's session calibration (alignment, pixel baseline, and the feature
        and embedding statistics its per-animal normalisation uses)."""
        if self.temporal.animal_norm is not None:
            if calibration.embedding_mean is None:
                raise ValueError("this encoder normalises its embedding per animal, but the calibration has no "
                                 "embedding statistics (measure them with trainer.calibration.calibrate_encoder)")
            self.temporal.animal_norm.set_statistics(calibration.embedding_mean, calibration.embedding_std)
        self.frame_encoder.set_calibration(calibration)

    def forward(self, frames: Tensor) -> Tensor:
        feats = self.frame_encoder(frames.flatten(0, 1)).unflatten(0, (-1, self.window))
        return self.temporal(feats)

    def forward_pooled(self, pooled: Tensor, baseline: Tensor | None = None, animals: Tensor | None = None,
                       window_animals: Tensor | None = None) -> Tensor:
        """Same as `forward` on windows already passed through `frame_encoder.preprocess` (and,
        for session models, aligned): (B, W, h, w) pooled counts -> (B, D). Training uses it on
        cached frames; `baseline` (B, W, h, w) is each frame's own session calibration, `animals`
        (B, W) each frame's animal and `window_animals` (B,) each window's (per-animal
        normalisation of the features / of the embedding with batch statistics; without them
        the installed statistics are used)."""
        if baseline is not None:
            baseline = baseline.flatten(0, 1).unsqueeze(1)
        frame_animals = None if animals is None else animals.flatten()
        feats = self.frame_encoder.encode_pooled(pooled.flatten(0, 1).unsqueeze(1), baseline, frame_animals)
        return self.temporal(feats.unflatten(0, (-1, self.window)), window_animals)
