"""Field-of-view alignment: register each animal's imaging field to the model's template.

Why: the same neurons sit at different places in every preparation (the field of view is
rotated, shifted and scaled from animal to animal, by several pixels at the encoder's pooled
resolution), and every neuron looks alike (a blob), so *which* neuron is active is only known
from *where* it is. A shared encoder that reads position cannot transfer across animals unless
their fields are brought into one frame first — what labs do when they match cells across
sessions. This module does it without labels or pose, from the recording alone:

* a registration image per animal (`registration_image`): the temporal mean and standard
  deviation of log1p pooled frames (anatomy and activity), each band-passed (the smooth
  background dropped, pixel noise smoothed) and z-scored, so gain, offset and background do not
  matter;
* a template (`build_template`): images of the training animals aligned to each other and
  averaged, twice (a group template rather than one arbitrary animal's);
* a similarity transform per animal (`estimate_alignment`): exhaustive search over rotation and
  scale, translation by FFT cross-correlation with a sub-pixel peak, then a finer search around
  the best; the score is the normalised cross-correlation at the optimum.

`Alignment.theta()` is the 2 x 3 matrix of `torch.nn.functional.affine_grid` (normalised
coordinates, `align_corners=False`) mapping template coordinates to the animal's: the encoder's
`Align` layer samples the animal's frame there, so the exported graph aligns live frames the
same way training aligned recorded ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# Remounting a preparation turns its field by up to tens of degrees; the coarse search covers
# +-30 (a fit within a step of a limit is flagged: `edge_of_search`).
COARSE_ROTATIONS_DEG = np.arange(-30.0, 30.01, 2.0)
COARSE_SCALES = np.arange(0.80, 1.201, 0.05)
FINE_ROTATION_STEP_DEG = 0.5
FINE_SCALE_STEP = 0.0125
LOWPASS_SIGMA_PX = 1.0
HIGHPASS_SIGMA = 0.12  # fraction of the shorter side: keeps neurons and lobe edges, drops smooth background
MAX_FRAMES = 4000  # evenly spaced frames used for images and statistics: more adds nothing but time


def evenly_spaced(n: int, limit: int = MAX_FRAMES) -> np.ndarray:
    """Indices of at most `limit` of `n` frames, spread evenly over them (all when n <= limit)."""
    if n <= limit:
        return np.arange(n)
    return np.linspace(0, n - 1, limit).astype(np.int64)


def _standardise(img: np.ndarray) -> np.ndarray:
    """(C, h, w) -> zero mean, unit standard deviation per channel."""
    return (img - img.mean(axis=(-2, -1), keepdims=True)) / np.maximum(img.std(axis=(-2, -1), keepdims=True), 1e-6)


@dataclass(frozen=True)
class Alignment:
    """Similarity transform from template coordinates to one animal's (normalised [-1, 1] units)."""

    rotation_deg: float = 0.0
    scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    score: float = 1.0  # normalised cross-correlation with the template at the optimum

    def theta(self) -> np.ndarray:
        """2 x 3 `affine_grid` matrix: animal = scale * R(rotation) @ template + shift."""
        a = math.radians(self.rotation_deg)
        c, s = math.cos(a), math.sin(a)
        return np.array([[self.scale * c, -self.scale * s, self.shift_x],
                         [self.scale * s, self.scale * c, self.shift_y]], dtype=np.float32)

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in asdict(self).items()}

    @staticmethod
    def from_dict(d: dict[str, float]) -> Alignment:
        return Alignment(**{k: float(d[k]) for k in ("rotation_deg", "scale", "shift_x", "shift_y", "score") if k in d})

    def then(self, inner: Alignment) -> Alignment:
        """The transform x -> self(inner(x)) (score kept from `self`)."""
        m = self.theta()
        lin, t = m[:, :2], m[:, 2]
        shift = lin @ inner.theta()[:, 2] + t
        return Alignment(self.rotation_deg + inner.rotation_deg, self.scale * inner.scale,
                         float(shift[0]), float(shift[1]), self.score)

    def inverse(self) -> Alignment:
        m = self.theta()
        inv = np.linalg.inv(m[:, :2])
        shift = -inv @ m[:, 2]
        return Alignment(-self.rotation_deg, 1.0 / self.scale, float(shift[0]), float(shift[1]), self.score)

    def is_identity(self) -> bool:
        return self.rotation_deg == 0.0 and self.scale == 1.0 and self.shift_x == 0.0 and self.shift_y == 0.0


IDENTITY = Alignment()


def sampling_grid(alignment: Alignment, shape: tuple[int, int]) -> Tensor:
    """(1, h, w, 2) `grid_sample` grid that resamples an animal's (h, w) frame into template space."""
    theta = torch.from_numpy(alignment.theta()).unsqueeze(0)
    return F.affine_grid(theta, [1, 1, *shape], align_corners=False)


def warp(frames: Tensor, alignment: Alignment, padding_mode: str = "border") -> Tensor:
    """(N, h, w) frames of one animal -> the same frames in template space (bilinear). Outside the
    animal's field the edge pixels repeat ("border"), so no artificial dark edge appears."""
    grid = sampling_grid(alignment, tuple(frames.shape[-2:])).to(frames.dtype).expand(len(frames), -1, -1, -1)
    return F.grid_sample(frames.unsqueeze(1), grid, mode="bilinear", padding_mode=padding_mode,
                         align_corners=False).squeeze(1)


def _blur(img: Tensor, sigma_px: float) -> Tensor:
    """Separable Gaussian blur of (C, h, w), reflecting at the edges."""
    radius = max(1, int(math.ceil(3 * sigma_px)))
    x = torch.arange(-radius, radius + 1, dtype=img.dtype)
    k = torch.exp(-0.5 * (x / sigma_px) ** 2)
    k = k / k.sum()
    c = img.shape[0]
    out = img.unsqueeze(0)
    pad = min(radius, img.shape[-1] - 1, img.shape[-2] - 1)
    out = F.pad(out, (pad, pad, pad, pad), mode="reflect")
    out = F.pad(out, (radius - pad,) * 4, mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out.squeeze(0)


def registration_image(pooled: np.ndarray | Tensor, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """(N, h, w) pooled raw counts of one animal -> (2, h, w) float32: band-passed, z-scored
    temporal mean and standard deviation of log1p counts (at most `max_frames`, evenly spaced)."""
    x = torch.as_tensor(np.asarray(pooled), dtype=torch.float32)
    if x.ndim != 3 or len(x) < 2:
        raise ValueError(f"need (N >= 2, h, w) frames for a registration image, got shape {tuple(x.shape)}")
    x = x[torch.from_numpy(evenly_spaced(len(x), max_frames))]
    x = torch.log1p(torch.clamp(x, min=0.0))
    img = torch.stack([x.mean(0), x.std(0)])
    # band-pass: the low-pass evens out bilinear resampling, which otherwise favours the one
    # candidate that needs none (rotation 0, scale 1) by blurring all others
    img = _blur(img, LOWPASS_SIGMA_PX) - _blur(img, HIGHPASS_SIGMA * min(img.shape[-2:]))
    img = img - img.mean(dim=(-2, -1), keepdim=True)
    img = img / img.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    return img.numpy().astype(np.float32)


def _half_pixel(shape: tuple[int, ...]) -> Alignment:
    """A half-pixel translation. Candidates and template are both sampled through it, so every
    candidate is interpolated alike: sampled on the pixel grid, the identity candidate alone
    would escape bilinear smoothing and win ties it should not."""
    h, w = shape[-2:]
    return Alignment(0.0, 1.0, 1.0 / w, 1.0 / h)


def _candidates(image: Tensor, rotations: np.ndarray, scales: np.ndarray) -> tuple[Tensor, Tensor, list[tuple[float, float]]]:
    """Warp (C, h, w) by every (rotation, scale) pair, through `_half_pixel`: (K, C, h, w), the
    part of each that lies inside the image (K, 1, h, w), and the pairs."""
    pairs = [(float(r), float(s)) for r in rotations for s in scales]
    half = _half_pixel(tuple(image.shape))
    thetas = torch.stack([torch.from_numpy(Alignment(r, s).then(half).theta()) for r, s in pairs])
    grid = F.affine_grid(thetas, [len(pairs), *image.shape], align_corners=False)
    warped = F.grid_sample(image.unsqueeze(0).expand(len(pairs), -1, -1, -1), grid, mode="bilinear",
                           padding_mode="zeros", align_corners=False)
    inside = F.grid_sample(torch.ones(len(pairs), 1, *image.shape[-2:]), grid, mode="bilinear",
                           padding_mode="zeros", align_corners=False)
    return warped, inside, pairs


def _subpixel(c_minus: float, c0: float, c_plus: float) -> float:
    """Offset of a parabola's vertex through three samples around a peak, in (-0.5, 0.5)."""
    denom = c_minus - 2 * c0 + c_plus
    return 0.0 if denom >= 0 else float(np.clip(0.5 * (c_minus - c_plus) / denom, -0.5, 0.5))


def _best_shift(warped: Tensor, inside: Tensor, template: Tensor, max_shift: float) -> tuple[Tensor, Tensor]:
    """Normalised cross-correlation (zero-padded FFT) of every candidate with the template, over
    their overlap: sum T(p) W(p - d) / sqrt(sum T(p)^2 M(p - d) * sum W^2), M the candidate's
    inside mask. Normalising by the overlap matters: a raw sum favours zooming in (a smaller
    scale samples less outside the image). Returns per candidate: score (K,) and the
    integer-plus-subpixel shift in pixels (K, 2) as (dy, dx) such that warped(p - d) matches
    template(p)."""
    k, c, h, w = warped.shape
    ph, pw = 2 * h, 2 * w
    fw = torch.fft.rfft2(warped, s=(ph, pw))
    ft = torch.fft.rfft2(template.unsqueeze(0), s=(ph, pw))
    corr = torch.fft.irfft2(ft * fw.conj(), s=(ph, pw)).sum(1)  # (K, ph, pw): corr[d] = sum T(p) W(p - d)
    ft2 = torch.fft.rfft2((template * template).sum(0, keepdim=True).unsqueeze(0), s=(ph, pw))
    energy_t = torch.fft.irfft2(ft2 * torch.fft.rfft2(inside, s=(ph, pw)).conj(), s=(ph, pw)).sum(1)
    energy_w = (warped * warped).sum(dim=(1, 2, 3)).view(k, 1, 1)
    corr = corr / torch.sqrt(energy_t.clamp_min(0) * energy_w + 1e-6)
    dy = torch.fft.fftfreq(ph, 1.0 / ph).abs().view(-1, 1)
    dx = torch.fft.fftfreq(pw, 1.0 / pw).abs().view(1, -1)
    allowed = (dy <= max_shift * h / 2) & (dx <= max_shift * w / 2)
    corr = corr.masked_fill(~allowed, -float("inf"))
    flat = corr.flatten(1).argmax(1)
    iy, ix = flat // pw, flat % pw
    scores = corr.flatten(1).gather(1, flat.unsqueeze(1)).squeeze(1)
    shifts = torch.zeros(k, 2)
    for i in range(k):
        y, x = int(iy[i]), int(ix[i])
        sy = _subpixel(float(corr[i, (y - 1) % ph, x]), float(corr[i, y, x]), float(corr[i, (y + 1) % ph, x]))
        sx = _subpixel(float(corr[i, y, (x - 1) % pw]), float(corr[i, y, x]), float(corr[i, y, (x + 1) % pw]))
        shifts[i, 0] = (y if y <= ph // 2 else y - ph) + sy
        shifts[i, 1] = (x if x <= pw // 2 else x - pw) + sx
    return scores, shifts


def _search(moving: Tensor, template: Tensor, rotations: np.ndarray, scales: np.ndarray,
            max_shift: float) -> Alignment:
    warped, inside, pairs = _candidates(moving, rotations, scales)
    template = warp(template, _half_pixel(tuple(template.shape)), "zeros")
    scores, shifts = _best_shift(warped, inside, template, max_shift)
    best = int(scores.argmax())
    rot, scale = pairs[best]
    h, w = moving.shape[-2:]
    d = shifts[best]
    # warped(p) = M(A(H p)), template'(p) = T(H p), H the half-pixel shift; warped(p - d) matching
    # template'(p) means M(A x - A d) = T(x) for x = H p: the shift is -A d
    d_norm = np.array([2.0 * float(d[1]) / w, 2.0 * float(d[0]) / h])  # (x, y) normalised
    linear = Alignment(rot, scale).theta()[:, :2]
    shift = -linear @ d_norm
    return Alignment(rot, scale, float(shift[0]), float(shift[1]), float(scores[best]))


def estimate_alignment(moving: np.ndarray, template: np.ndarray, max_shift: float = 0.5) -> Alignment:
    """The similarity transform that best maps `template` (C, h, w) onto `moving` (C, h, w)
    (both from `registration_image`); `max_shift` bounds the translation (normalised units)."""
    if moving.shape != template.shape:
        raise ValueError(f"registration images differ in shape: {moving.shape} vs {template.shape}")
    m = torch.from_numpy(np.ascontiguousarray(moving, dtype=np.float32))
    t = torch.from_numpy(np.ascontiguousarray(template, dtype=np.float32))
    coarse = _search(m, t, COARSE_ROTATIONS_DEG, COARSE_SCALES, max_shift)
    rot = coarse.rotation_deg + np.arange(-2.0, 2.01, FINE_ROTATION_STEP_DEG)
    scl = coarse.scale + np.arange(-0.05, 0.0501, FINE_SCALE_STEP)
    fine = _search(m, t, rot, scl[scl > 0.5], max_shift)
    return Alignment(fine.rotation_deg, fine.scale, fine.shift_x, fine.shift_y, float(np.clip(fine.score, -1.0, 1.0)))


def edge_of_search(alignment: Alignment, max_shift: float = 0.5) -> list[str]:
    """What about a fitted alignment lies at (within one coarse step of) the search's limits:
    the true transform may lie outside, so the fit is not to be trusted."""
    out = []
    rot_step = float(COARSE_ROTATIONS_DEG[1] - COARSE_ROTATIONS_DEG[0])
    if abs(alignment.rotation_deg) > float(COARSE_ROTATIONS_DEG.max()) - rot_step:
        out.append(f"rotation {alignment.rotation_deg:+.1f} deg is at the edge of the search range "
                   f"(+-{COARSE_ROTATIONS_DEG.max():.0f} deg)")
    scale_step = float(COARSE_SCALES[1] - COARSE_SCALES[0])
    if not (COARSE_SCALES.min() + scale_step / 2 <= alignment.scale <= COARSE_SCALES.max() - scale_step / 2):
        out.append(f"scale {alignment.scale:.3f} is at the edge of the search range "
                   f"({COARSE_SCALES.min():.2f}-{COARSE_SCALES.max():.2f})")
    if max(abs(alignment.shift_x), abs(alignment.shift_y)) > 0.9 * max_shift:
        out.append(f"shift ({alignment.shift_x:+.2f}, {alignment.shift_y:+.2f}) is at the edge of the search "
                   f"range (+-{max_shift:.2f} of the half field)")
    return out


def warp_image(image: np.ndarray, alignment: Alignment) -> np.ndarray:
    """(C, h, w) registration image of an animal -> template space."""
    return warp(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), alignment, "zeros").numpy()


def build_template(images: Sequence[np.ndarray], iterations: int = 2) -> tuple[np.ndarray, list[Alignment]]:
    """Group template from several animals' registration images: start from the image that
    correlates best with the others, align every image to it, average, repeat. Returns the
    template (C, h, w) and each image's alignment to it (in input order)."""
    if not images:
        raise ValueError("need at least one registration image to build a template")
    stack = np.stack(images)
    mean_others = (stack.sum(0, keepdims=True) - stack) / max(1, len(stack) - 1)
    start = int(np.argmax([(a * b).mean() for a, b in zip(stack, mean_others, strict=True)]))
    template = stack[start]
    alignments = [IDENTITY] * len(images)
    for _ in range(iterations):
        alignments = [estimate_alignment(img, template) for img in images]
        template = _standardise(np.mean([warp_image(img, a) for img, a in zip(images, alignments, strict=True)], axis=0))
    # Recentre on the average animal (mean rotation, log-scale and shift): the loop above can
    # drift (shrink or turn the template) without changing how well images match.
    mean = Alignment(float(np.mean([a.rotation_deg for a in alignments])),
                     float(np.exp(np.mean([np.log(a.scale) for a in alignments]))),
                     float(np.mean([a.shift_x for a in alignments])), float(np.mean([a.shift_y for a in alignments])))
    centre = mean.inverse()
    template = _standardise(np.mean([warp_image(img, a.then(centre)) for img, a in zip(images, alignments, strict=True)], axis=0))
    alignments = [estimate_alignment(img, template) for img in images]
    return template.astype(np.float32), alignments
