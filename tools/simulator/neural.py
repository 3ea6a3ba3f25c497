"""2-photon imaging of descending-neuron-like axons in the cervical connective.

A shared template (positions, shapes, tuning to actions and pose kinematics) is varied per
animal: field-of-view rotation/translation/scale, jittered positions, missing and extra
neurons, brightness, baseline, detector gain/offset, indicator kinetics (GCaMP-like rise
50-100 ms, decay 0.5-1.5 s) and a tissue background of its own. Tuned neurons are shared,
so an encoder guided by behaviour can find animal-invariant features; the raw pixels differ
per animal, so a linear read-out of raw frames does not transfer and identity is obvious.
The `*-varied` presets also make animals differ after rigid alignment (`AnimalNeural.sample_varied`,
tools/simulator/variation.py): deformed anatomy, a visible subset, per-neuron gains, partly
shared tuning.

Rendering is vectorised: each neuron's blurred footprint is computed once per animal, a block
of frames is `activity @ footprints`, then drift, rigid motion, shot and read noise are added.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from scipy.signal import lfilter

from tools.simulator.behaviour import N_ACTIONS
from tools.simulator.pose import KINEMATIC_FEATURES, _lowpass
from tools.simulator.variation import AnimalVariation, Deformation, mix_tuning, response_gains, visible_subset

N_KIN = len(KINEMATIC_FEATURES)
# The connective in coronal section: two lobes (left/right halves) side by side.
LOBE_CENTERS = np.array([[-0.38, 0.0], [0.38, 0.0]])
LOBE_RADII = np.array([0.32, 0.62])  # x, y half-axes (normalised FOV units)
POSITION_JITTER = 0.015  # per-neuron misplacement from the template (normalised; not smooth)


def _in_lobes(rng: np.random.Generator, n: int) -> np.ndarray:
    """n points uniformly inside the two lobes (normalised coordinates, x right, y down)."""
    lobe = rng.integers(2, size=n)
    r = np.sqrt(rng.random(n)) * 0.92
    a = rng.uniform(0, 2 * np.pi, n)
    return LOBE_CENTERS[lobe] + np.stack([r * np.cos(a), r * np.sin(a)], axis=1) * LOBE_RADII


@dataclass(frozen=True)
class NeuronSet:
    """Geometry and tuning of a set of neurons (template or one animal's)."""

    positions: np.ndarray  # N x 2 normalised FOV coordinates
    sigma: np.ndarray  # N, normalised
    elongation: np.ndarray  # N, >= 1
    angle: np.ndarray  # N rad
    bias: np.ndarray  # N
    action_weights: np.ndarray  # N x N_ACTIONS
    kin_weights: np.ndarray  # N x N_KIN
    noise_weight: np.ndarray  # N: private (untuned) fluctuation strength
    amplitude: np.ndarray  # N: dF/F per unit drive

    def __len__(self) -> int:
        return len(self.positions)

    def take(self, idx: np.ndarray) -> NeuronSet:
        return NeuronSet(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})

    @staticmethod
    def concat(a: NeuronSet, b: NeuronSet) -> NeuronSet:
        return NeuronSet(**{k: np.concatenate([getattr(a, k), getattr(b, k)]) for k in a.__dataclass_fields__})

    @staticmethod
    def sample(rng: np.random.Generator, n: int, tuned_fraction: float = 0.75) -> NeuronSet:
        """Random neurons: `tuned_fraction` driven by actions and/or kinematics, the rest untuned."""
        kind = rng.random(n)
        action_tuned = kind < tuned_fraction * 0.7
        kin_tuned = (kind >= tuned_fraction * 0.45) & (kind < tuned_fraction)
        aw = rng.normal(0.0, 0.25, (n, N_ACTIONS))
        for i in np.flatnonzero(action_tuned):
            prefs = rng.choice(N_ACTIONS, size=rng.integers(1, 3), replace=False)
            aw[i, prefs] += rng.uniform(2.0, 3.5, len(prefs))
        kw = np.zeros((n, N_KIN))
        for i in np.flatnonzero(kin_tuned):
            feats = rng.choice(N_KIN, size=rng.integers(1, 3), replace=False)
            kw[i, feats] = rng.choice([-1.0, 1.0], len(feats)) * rng.uniform(1.0, 2.0, len(feats))
        untuned = ~(action_tuned | kin_tuned)
        aw[untuned] *= 0.2
        return NeuronSet(
            positions=_in_lobes(rng, n),
            sigma=rng.uniform(0.022, 0.04, n),
            elongation=rng.uniform(1.0, 1.8, n),
            angle=rng.uniform(0, np.pi, n),
            bias=rng.uniform(-2.0, -0.8, n),
            action_weights=aw,
            kin_weights=kw,
            noise_weight=np.where(untuned, rng.uniform(1.0, 1.8, n), rng.uniform(0.2, 0.5, n)),
            amplitude=rng.uniform(0.6, 1.6, n),
        )


@dataclass(frozen=True)
class AnimalNeural:
    """One animal's preparation: its neurons after the FOV transform, optics and indicator."""

    neurons: NeuronSet
    template_index: np.ndarray  # per neuron, index in the template or -1 for extra neurons
    rotation_rad: float
    scale: float
    translation: np.ndarray  # 2, normalised
    brightness: np.ndarray  # per neuron resting photons at the footprint peak
    background_photons: float
    background_seed: int
    gain: float  # counts per photon
    dark_offset: float  # counts
    read_noise: float  # counts
    rise_s: float
    decay_s: float
    bleach_tau_s: float
    drift_fraction: float
    motion_px: float
    jump_rate_hz: float
    deformation: Deformation | None = None  # non-rigid anatomy (varied presets only), template -> animal

    @staticmethod
    def sample(template: NeuronSet, rng: np.random.Generator, *, missing_fraction: tuple[float, float] = (0.1, 0.2),
               extra_fraction: tuple[float, float] = (0.05, 0.15)) -> AnimalNeural:
        n = len(template)
        keep = np.flatnonzero(rng.random(n) >= rng.uniform(*missing_fraction))
        kept = template.take(keep)
        n_extra = int(round(n * rng.uniform(*extra_fraction)))
        extra = NeuronSet.sample(rng, n_extra, tuned_fraction=0.5)
        neurons = NeuronSet.concat(kept, extra)
        theta = float(rng.uniform(-12, 12) * np.pi / 180)
        scale = float(rng.uniform(0.85, 1.15))
        shift = rng.uniform(-0.12, 0.12, 2)
        jittered = neurons.positions + rng.normal(0, POSITION_JITTER, neurons.positions.shape)
        return AnimalNeural(
            neurons=_place(neurons, jittered, theta, scale, shift),
            template_index=np.concatenate([keep, np.full(n_extra, -1)]),
            rotation_rad=theta,
            scale=scale,
            translation=shift,
            brightness=_neuron_brightness(rng, len(neurons)),
            background_photons=float(rng.uniform(8.0, 30.0)),
            background_seed=int(rng.integers(2**31)),
            gain=float(rng.uniform(1.5, 4.0)),
            dark_offset=float(rng.uniform(50.0, 400.0)),
            read_noise=float(rng.uniform(2.0, 6.0)),
            rise_s=float(rng.uniform(0.05, 0.1)),
            decay_s=float(rng.uniform(0.5, 1.5)),
            bleach_tau_s=float(rng.uniform(400.0, 1500.0)),
            drift_fraction=float(rng.uniform(0.02, 0.05)),
            motion_px=float(rng.uniform(0.2, 0.6)),
            jump_rate_hz=float(rng.uniform(0.01, 0.05)),
        )

    @staticmethod
    def sample_varied(template: NeuronSet, variation: AnimalVariation, rng: np.random.Generator) -> AnimalNeural:
        """The animal `sample` draws from the same generator (field-of-view transform, optics,
        indicator, background), made to differ after rigid alignment too (tools.simulator.variation):
        a fixed-size visible subset of the template plus neurons of its own, tuning partly its own,
        a response gain per neuron, and its anatomy deformed. The variation has a generator of its
        own, so a varied preset's animals keep the original preset's transforms for the same seed."""
        base = AnimalNeural.sample(template, rng)
        own = np.random.default_rng(rng.integers(2**63))
        n = len(template)
        keep = visible_subset(n, variation.n_visible(n), own)
        kept = _individualise(template.take(keep), template, variation, own)
        n_extra = variation.n_extra(n)
        neurons = NeuronSet.concat(kept, NeuronSet.sample(own, n_extra, tuned_fraction=0.5))
        deformation = Deformation.sample(own, variation.deformation_rms, variation.deformation_cycles)
        anatomy = deformation.apply(neurons.positions) + own.normal(0, POSITION_JITTER, neurons.positions.shape)
        return replace(
            base,
            neurons=_place(neurons, anatomy, base.rotation_rad, base.scale, base.translation),
            template_index=np.concatenate([keep, np.full(n_extra, -1)]),
            brightness=_neuron_brightness(own, len(neurons)),
            deformation=deformation,
        )


def _neuron_brightness(rng: np.random.Generator, n: int) -> np.ndarray:
    """Resting photons at each footprint's peak: an animal-wide level times a per-neuron spread."""
    return rng.uniform(0.6, 1.6) * rng.lognormal(np.log(30.0), 0.35, n)


def _place(neurons: NeuronSet, positions: np.ndarray, theta: float, scale: float, shift: np.ndarray) -> NeuronSet:
    """`neurons` at `positions` (template coordinates) seen through the field-of-view transform."""
    return replace(neurons, positions=_transform(positions, theta, scale, shift), sigma=neurons.sigma * scale)


def _individualise(kept: NeuronSet, template: NeuronSet, variation: AnimalVariation,
                   rng: np.random.Generator) -> NeuronSet:
    """The template's neurons as this animal has them: tuning mixed with a deviation of its own
    (drawn like the template's tuning), response amplitude times a gain of its own."""
    private = NeuronSet.sample(rng, len(kept))
    rho = variation.tuning_shared
    return replace(
        kept,
        action_weights=mix_tuning(kept.action_weights, private.action_weights, rho, template.action_weights.mean(0)),
        kin_weights=mix_tuning(kept.kin_weights, private.kin_weights, rho, template.kin_weights.mean(0)),
        amplitude=kept.amplitude * response_gains(rng, len(kept), variation.gain_sd),
    )


def _transform(points: np.ndarray, theta: float, scale: float, shift: np.ndarray) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    return scale * points @ rot.T + shift


def ou_noise(n: int, rate_hz: float, tau_s: float, rng: np.random.Generator, width: int = 1) -> np.ndarray:
    """Stationary Ornstein-Uhlenbeck noise, unit variance, correlation time `tau_s` (n x width).

    Starts from a draw of the stationary distribution, so trials have no start-up burst.
    """
    a = np.exp(-1.0 / (tau_s * rate_hz))
    eps = rng.standard_normal((n, width))
    y0 = rng.standard_normal(width)
    y, _ = lfilter([np.sqrt(1.0 - a * a)], [1.0, -a], eps, axis=0, zi=(a * y0)[None, :])
    return y


def neural_activity(neurons: NeuronSet, labels: np.ndarray, kin: np.ndarray, rate_hz: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Underlying firing drive per pose frame (T_b x N), >= 0: actions + kinematics + private noise."""
    onehot = np.eye(N_ACTIONS)[labels]
    onehot = _lowpass(onehot, rate_hz, 0.15)  # neurons ramp into a bout rather than switching
    # Private fluctuations: Ornstein-Uhlenbeck with ~0.5 s correlation time.
    ou = ou_noise(len(labels), rate_hz, 0.5, rng, len(neurons))
    z = neurons.bias + onehot @ neurons.action_weights.T + kin @ neurons.kin_weights.T + ou * neurons.noise_weight
    return np.logaddexp(0.0, z)  # softplus


def calcium_dff(drive: np.ndarray, rate_hz: float, rise_s: float, decay_s: float) -> np.ndarray:
    """GCaMP-like indicator: drive through a rise then a decay first-order filter."""
    return _lowpass(_lowpass(drive, rate_hz, rise_s), rate_hz, decay_s)


def sample_at(values: np.ndarray, rate_hz: float, times: np.ndarray) -> np.ndarray:
    """Linear interpolation of a regularly sampled T x N signal (t = i / rate_hz) at `times`."""
    x = np.clip(times * rate_hz, 0, len(values) - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, len(values) - 1)
    w = (x - lo)[:, None]
    return values[lo] * (1 - w) + values[hi] * w


def motion_trace(n: int, rate_hz: float, animal: AnimalNeural, rng: np.random.Generator) -> np.ndarray:
    """Rigid translation per frame (n x 2 px): slow wobble plus occasional jumps that relax back."""
    wobble = animal.motion_px * ou_noise(n, rate_hz, 0.4, rng, 2)
    kicks = np.zeros((n, 2))
    jumps = rng.random(n) < animal.jump_rate_hz / rate_hz
    kicks[jumps] = rng.normal(0, 2.0, (int(jumps.sum()), 2))
    # A jump displaces the tissue at once, then it relaxes back over ~1 s.
    alpha = np.exp(-1.0 / (1.0 * rate_hz))
    jumps_state = np.zeros((n, 2))
    acc = np.zeros(2)
    for i in range(n):
        acc = acc * alpha + kicks[i]
        jumps_state[i] = acc
    return wobble + jumps_state


def baseline_drift(n: int, rate_hz: float, times: np.ndarray, animal: AnimalNeural,
                   rng: np.random.Generator) -> np.ndarray:
    """Multiplicative brightness per frame (n,): photobleaching times a slow wander (laser power,
    PMT gain) of a few percent with a ~10 s correlation time."""
    wander = animal.drift_fraction * ou_noise(n, rate_hz, 10.0, rng)[:, 0]
    return np.exp(-times / animal.bleach_tau_s) * (1.0 + wander)


class Renderer:
    """Per-animal precomputed footprints and background for one frame shape."""

    def __init__(self, animal: AnimalNeural, frame_shape: tuple[int, int]) -> None:
        h, w = frame_shape
        self.animal = animal
        self.frame_shape = (h, w)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        # Normalised coordinates of each pixel centre.
        u = xs / max(w - 1, 1) * 2 - 1
        v = ys / max(h - 1, 1) * 2 - 1
        nset = animal.neurons
        px_per_unit = np.array([(w - 1) / 2, (h - 1) / 2])
        fps = np.empty((len(nset), h * w), dtype=np.float32)
        for i in range(len(nset)):
            dx = (u - nset.positions[i, 0]) * px_per_unit[0]
            dy = (v - nset.positions[i, 1]) * px_per_unit[1]
            c, s = np.cos(nset.angle[i]), np.sin(nset.angle[i])
            a = c * dx + s * dy
            b = -s * dx + c * dy
            sig = max(float(nset.sigma[i] * min(px_per_unit)), 0.7)
            fps[i] = np.exp(-0.5 * ((a / (sig * nset.elongation[i])) ** 2 + (b / sig) ** 2)).ravel()
        self.footprints = fps * animal.brightness[:, None].astype(np.float32)
        self.background = self._background(u, v).ravel().astype(np.float32)

    def _background(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Tissue autofluorescence: the two lobes (in this animal's FOV) plus a smooth pattern of its own."""
        a = self.animal
        pts = np.stack([u.ravel(), v.ravel()], axis=1)
        c, s = np.cos(-a.rotation_rad), np.sin(-a.rotation_rad)
        tmpl = ((pts - a.translation) / a.scale) @ np.array([[c, -s], [s, c]]).T
        if a.deformation is not None:  # the lobes bend with the neurons in them
            tmpl = a.deformation.invert(tmpl)
        tissue = np.zeros(len(pts))
        for center in LOBE_CENTERS:
            r = np.sqrt((((tmpl - center) / LOBE_RADII) ** 2).sum(axis=1))
            tissue += 1.0 / (1.0 + np.exp((r - 1.0) / 0.06))
        rng = np.random.default_rng(a.background_seed)
        pattern = np.zeros(len(pts))
        for _ in range(6):
            cx, cy = rng.uniform(-1, 1, 2)
            width = rng.uniform(0.3, 0.8)
            pattern += rng.uniform(0.2, 0.8) * np.exp(-((pts[:, 0] - cx) ** 2 + (pts[:, 1] - cy) ** 2) / (2 * width**2))
        img = a.background_photons * (0.25 + tissue + 0.5 * pattern)
        return img.reshape(u.shape)

    def render(self, dff: np.ndarray, brightness: np.ndarray, motion: np.ndarray, rng: np.random.Generator,
               block: int = 64) -> Iterator[np.ndarray]:
        """uint16 frames (block x H x W) for dF/F (T_n x N), per-frame `brightness` (T_n, bleaching
        and drift) and rigid `motion` (T_n x 2 px)."""
        a = self.animal
        h, w = self.frame_shape
        amplitude = a.neurons.amplitude.astype(np.float32)
        read_var = np.float32(a.read_noise**2)
        gain = np.float32(a.gain)
        for start in range(0, len(dff), block):
            stop = min(start + block, len(dff))
            act = 1.0 + dff[start:stop].astype(np.float32) * amplitude
            photons = act @ self.footprints
            photons += self.background
            photons *= brightness[start:stop].astype(np.float32)[:, None]
            photons = shift_frames(photons.reshape(-1, h, w), motion[start:stop])
            np.maximum(photons, 0.0, out=photons)
            # Shot noise (Gaussian approximation of Poisson: photon counts here are >> 1) and
            # read noise are independent Gaussians: one draw with the summed variance.
            sd = photons * (gain * gain)
            sd += read_var
            np.sqrt(sd, out=sd)
            sd *= rng.standard_normal(photons.shape, dtype=np.float32)
            photons *= gain
            photons += sd
            photons += np.float32(a.dark_offset)
            np.rint(photons, out=photons)
            np.clip(photons, 0, 65535, out=photons)
            yield photons.astype(np.uint16)


def shift_frames(frames: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Rigid sub-pixel translation of each frame by (dy, dx) px: bilinear, edges repeated.

    Same convention as scipy.ndimage.shift (content moves by +dy, +dx), ~20x faster here
    because the edge padding is done once per block.
    """
    if len(frames) == 0:
        return frames
    src = -np.asarray(shifts, dtype=np.float64)  # output[y] = input[y + src]
    m = int(np.ceil(np.abs(src).max())) + 1
    padded = np.pad(frames, ((0, 0), (m, m), (m, m)), mode="edge")
    t, h, w = frames.shape
    out = np.empty_like(frames)
    for k in range(t):
        sy, sx = src[k]
        iy, ix = int(np.floor(sy)), int(np.floor(sx))
        fy, fx = np.float32(sy - iy), np.float32(sx - ix)
        y0, x0 = m + iy, m + ix
        p = padded[k]
        top = p[y0 : y0 + h, x0 : x0 + w] * (1 - fx) + p[y0 : y0 + h, x0 + 1 : x0 + 1 + w] * fx
        bottom = p[y0 + 1 : y0 + 1 + h, x0 : x0 + w] * (1 - fx) + p[y0 + 1 : y0 + 1 + h, x0 + 1 : x0 + 1 + w] * fx
        out[k] = top * (1 - fy) + bottom * fy
    return out
