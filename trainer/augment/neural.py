"""Neural augmentations that follow how 2-photon images are made.

Each is a pure function of a batch of windows `x` (B, W, h, w) of non-negative counts (raw, or
average-pooled by the encoder's `Downsample`) and an explicit `torch.Generator`; each draws its
random parameters per window (a window is one short stretch of one session). `motion` can
also model differences between preparations (where the field of view sits: shift, rotation,
zoom); the defaults stay at within-session strengths because strong field-of-view changes slowed
learning in short training runs (docs/trainer.md, "Results"). They are applied
to average-pooled counts during training: pooling is linear, so a gain, a baseline and the
calcium kinetics commute with it exactly; shot and read noise are scaled by `pixel_area` (the
number of raw pixels averaged into one pooled pixel) so that they have the variance they would
have had on raw pixels; shifts are given in raw pixels and divided by the pool factor.

Physical order (`NeuralAugmenter`): indicator kinetics (calcium) -> brightness/baseline
(laser power, expression, background) -> motion (the tissue moves under the objective) ->
shot noise (photon counting) -> read noise (detector electronics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"neural augmentations take windows (B, W, h, w), got shape {tuple(x.shape)}")


def _uniform(gen: torch.Generator, n: int, low: float, high: float, device: torch.device) -> Tensor:
    return (low + (high - low) * torch.rand(n, generator=gen, device=gen.device)).to(device)


def shot_noise(x: Tensor, gen: torch.Generator, max_strength: float, counts_per_photon: float = 1.0,
               pixel_area: float = 1.0) -> Tensor:
    """Extra photon (Poisson) noise: variance proportional to the signal, Gaussian approximation.

    Per window a strength s ~ U(0, max_strength) adds noise of variance
    s^2 * counts_per_photon * x / pixel_area (s = 1 doubles the shot-noise variance of data whose
    gain is `counts_per_photon`)."""
    _check(x)
    s = _uniform(gen, x.shape[0], 0.0, max_strength, x.device).view(-1, 1, 1, 1)
    std = s * torch.sqrt(torch.clamp(x, min=0.0) * counts_per_photon / pixel_area)
    noise = torch.randn(x.shape, generator=gen, device=gen.device).to(x.device)
    return torch.clamp(x + std * noise, min=0.0)


def read_noise(x: Tensor, gen: torch.Generator, max_std: float, pixel_area: float = 1.0) -> Tensor:
    """Signal-independent detector noise: std ~ U(0, max_std) raw counts per window, divided by
    sqrt(pixel_area) after pooling."""
    _check(x)
    std = _uniform(gen, x.shape[0], 0.0, max_std, x.device).view(-1, 1, 1, 1) / math.sqrt(pixel_area)
    noise = torch.randn(x.shape, generator=gen, device=gen.device).to(x.device)
    return torch.clamp(x + std * noise, min=0.0)


def brightness_baseline(x: Tensor, gen: torch.Generator, max_log_gain: float, max_baseline: float) -> Tensor:
    """x -> g * x + b per window: gain g = exp(U(-max_log_gain, max_log_gain)) (laser power,
    indicator expression) and baseline b = U(-max_baseline, max_baseline) times the window's
    median count (background, PMT offset); the result is clamped at 0."""
    _check(x)
    n = x.shape[0]
    g = torch.exp(_uniform(gen, n, -max_log_gain, max_log_gain, x.device)).view(-1, 1, 1, 1)
    med = x.flatten(1).median(dim=1).values.view(-1, 1, 1, 1)
    b = _uniform(gen, n, -max_baseline, max_baseline, x.device).view(-1, 1, 1, 1) * med
    return torch.clamp(g * x + b, min=0.0)


def motion(x: Tensor, gen: torch.Generator, max_shift: float, max_rotation_deg: float,
           jitter_px: float = 0.0, pool_factor: int = 1, max_zoom: float = 0.0) -> Tensor:
    """Rigid motion and field-of-view placement.

    Per window: a sub-pixel translation U(-max_shift, max_shift) per axis, as a fraction of the
    frame's side (where the objective sits over the tissue in this preparation); a rotation
    U(-max_rotation_deg, max_rotation_deg) about the centre; a zoom U(1 - max_zoom, 1 + max_zoom)
    (brain size, imaging depth). Per frame: translation jitter N(0, jitter_px) raw pixels (brain
    motion from walking and grooming); `pool_factor` converts raw pixels to the pooled grid.
    Bilinear resampling; edges repeat the border (a moved field of view sees tissue, not zeros)."""
    _check(x)
    b, w, h, wd = x.shape
    dev = gen.device
    size = torch.tensor([wd, h], dtype=torch.float32, device=dev)
    shift = (torch.rand(b, 1, 2, generator=gen, device=dev) * 2 - 1) * max_shift * size  # pooled px
    shift = shift + torch.randn(b, w, 2, generator=gen, device=dev) * (jitter_px / pool_factor)
    angle = (torch.rand(b, 1, generator=gen, device=dev) * 2 - 1) * math.radians(max_rotation_deg)
    zoom = 1.0 + (torch.rand(b, 1, generator=gen, device=dev) * 2 - 1) * max_zoom
    angle, zoom = angle.expand(b, w), zoom.expand(b, w)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # affine_grid maps output to input coordinates in [-1, 1]; convert pixel shifts accordingly
    # and keep the rotation isotropic on non-square frames.
    aspect = wd / h
    theta = torch.zeros(b, w, 2, 3, device=dev)
    theta[..., 0, 0] = cos
    theta[..., 0, 1] = -sin / aspect
    theta[..., 1, 0] = sin * aspect
    theta[..., 1, 1] = cos
    theta[..., 0, 2] = 2 * shift[..., 0] / wd
    theta[..., 1, 2] = 2 * shift[..., 1] / h
    flat = x.reshape(b * w, 1, h, wd)
    grid = F.affine_grid(theta.reshape(b * w, 2, 3).to(x.device), list(flat.shape), align_corners=False)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(b, w, h, wd)


def calcium_kinetics(x: Tensor, gen: torch.Generator, frame_rate_hz: float, tau_s: float,
                     tau_range_s: tuple[float, float]) -> Tensor:
    """Change the indicator's decay time constant, as if another animal expressed a faster or
    slower GCaMP.

    Model: per pixel, F_t = F0 + f_t with f_t = g f_{t-1} + s_t (AR(1) calcium transient,
    g = exp(-1/(rate * tau))). F0 is estimated as the pixel's minimum over the window; the spikes
    s_t = f_t - g f_{t-1} are recovered with the nominal `tau_s`, then re-filtered with a decay
    tau' ~ U(tau_range_s) per window: f'_0 = f_0, f'_t = g' f'_{t-1} + s_t. With tau' = tau_s the
    window is returned unchanged (up to float error)."""
    _check(x)
    if frame_rate_hz <= 0 or tau_s <= 0 or min(tau_range_s) <= 0:
        raise ValueError("frame rate and time constants must be > 0")
    b = x.shape[0]
    g = math.exp(-1.0 / (frame_rate_hz * tau_s))
    tau_new = _uniform(gen, b, tau_range_s[0], tau_range_s[1], x.device)
    g_new = torch.exp(-1.0 / (frame_rate_hz * tau_new)).view(-1, 1, 1)
    f0 = x.min(dim=1).values
    f = x - f0.unsqueeze(1)
    out = [f[:, 0]]
    for t in range(1, x.shape[1]):
        spikes = f[:, t] - g * f[:, t - 1]
        out.append(g_new * out[-1] + spikes)
    return torch.clamp(torch.stack(out, dim=1) + f0.unsqueeze(1), min=0.0)


@dataclass(frozen=True)
class NeuralAugmentParams:
    """Strengths; 0 (or False) switches an augmentation off."""

    shot_noise: float = 0.5          # max extra shot-noise strength (1 = double the variance)
    counts_per_photon: float = 1.0
    read_noise: float = 2.0          # max read-noise std, raw counts
    log_gain: float = 0.3            # max |log gain|: x0.74 .. x1.35
    baseline: float = 0.1            # max baseline change, fraction of the window median
    shift: float = 0.01              # max field-of-view shift, fraction of the frame side
    rotation_deg: float = 2.0        # max field-of-view rotation
    zoom: float = 0.0                # max relative change of scale
    jitter_px: float = 0.5           # per-frame motion jitter std, raw pixels
    calcium: bool = True             # re-filter with another decay time constant
    tau_s: float = 1.0               # nominal decay time constant of the data
    tau_range_s: tuple[float, float] = (0.5, 1.5)


class NeuralAugmenter:
    """Applies the enabled neural augmentations in physical order (module docstring)."""

    def __init__(self, params: NeuralAugmentParams, frame_rate_hz: float, pool_factor: int) -> None:
        self.p = params
        self.frame_rate_hz = frame_rate_hz
        self.pool_factor = pool_factor
        self.pixel_area = float(pool_factor * pool_factor)

    def __call__(self, x: Tensor, gen: torch.Generator) -> Tensor:
        p = self.p
        if p.calcium and x.shape[1] > 1:
            x = calcium_kinetics(x, gen, self.frame_rate_hz, p.tau_s, p.tau_range_s)
        if p.log_gain > 0 or p.baseline > 0:
            x = brightness_baseline(x, gen, p.log_gain, p.baseline)
        if p.shift > 0 or p.rotation_deg > 0 or p.jitter_px > 0 or p.zoom > 0:
            x = motion(x, gen, p.shift, p.rotation_deg, p.jitter_px, self.pool_factor, p.zoom)
        if p.shot_noise > 0:
            x = shot_noise(x, gen, p.shot_noise, p.counts_per_photon, self.pixel_area)
        if p.read_noise > 0:
            x = read_noise(x, gen, p.read_noise, self.pixel_area)
        return x
