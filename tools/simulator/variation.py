"""How an animal departs from the shared template beyond the rigid field-of-view transform.

Real preparations still differ once their fields of view are rigidly aligned: every mount
squeezes and bends the connective a little differently (a smooth, non-rigid deformation of the
anatomy), the imaging plane cuts a different subset of the axons, expression and indicator
load set each neuron's response gain, and an identified neuron is tuned alike but not
identically from fly to fly. `AnimalVariation` says how much of each; the `*-varied` presets use
it, `tiny` and `bench` do not (their animals differ by the rigid transform, per-neuron jitter,
missing/extra neurons and brightness only).

Pure functions of their inputs and an explicit generator; `neural.AnimalNeural.sample_varied`
applies them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

N_MODES = 6  # plane waves in a deformation field: enough for bends that differ across the field
GRID_SIDE = 33  # points per side of the grid the field is measured and normalised on


@dataclass(frozen=True)
class AnimalVariation:
    """How far each animal departs from the template after rigid alignment (normalised units:
    the half field of view is 1, so 0.03 is 3.8 px of a 256-px frame)."""

    visible_fraction: float = 0.75  # each animal shows exactly this share of the template's neurons
    extra_fraction: float = 0.2  # animal-specific neurons, as a share of the template's size
    deformation_rms: float = 0.03  # RMS of the anatomy's displacement (none of it a similarity transform)
    deformation_cycles: float = 1.0  # highest spatial frequency of the displacement, cycles per field
    gain_sd: float = 0.35  # per-neuron response gain: log-normal, this sd of the log, mean 1
    tuning_shared: float = 0.8  # expected correlation of a neuron's tuning between two animals

    def __post_init__(self) -> None:
        if not 0.0 < self.visible_fraction <= 1.0:
            raise ValueError(f"visible_fraction={self.visible_fraction}: need 0 < f <= 1")
        if not 0.0 <= self.extra_fraction <= 1.0:
            raise ValueError(f"extra_fraction={self.extra_fraction}: need 0 <= f <= 1")
        # The steepest slope of a field reaches ~10x its RMS: beyond 0.05 it could fold (and its
        # inverse, which the tissue background needs, would stop converging).
        if not 0.0 <= self.deformation_rms <= 0.05:
            raise ValueError(f"deformation_rms={self.deformation_rms}: need 0 <= rms <= 0.05")
        if not 0.0 < self.deformation_cycles <= 2.0:
            raise ValueError(f"deformation_cycles={self.deformation_cycles}: need 0 < cycles <= 2 (low frequency)")
        if not 0.0 <= self.gain_sd <= 1.0:
            raise ValueError(f"gain_sd={self.gain_sd}: need 0 <= sd <= 1")
        if not 0.0 <= self.tuning_shared <= 1.0:
            raise ValueError(f"tuning_shared={self.tuning_shared}: need 0 <= rho <= 1")

    def n_visible(self, n_template: int) -> int:
        return max(1, int(round(self.visible_fraction * n_template)))

    def n_extra(self, n_template: int) -> int:
        return int(round(self.extra_fraction * n_template))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def visible_subset(n_template: int, n_visible: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of the template neurons one animal shows: an exact count, so two animals
    share `n_visible / n_template` of their template neurons on average (hypergeometric)."""
    return np.sort(rng.choice(n_template, size=n_visible, replace=False))


def mix_tuning(shared: np.ndarray, private: np.ndarray, rho: float, centre: np.ndarray) -> np.ndarray:
    """Tuning weights of one animal: the template's (`shared`) mixed with a deviation of its own
    (`private`, drawn like the template), about their common expectation `centre`. Variance is
    kept, and two animals mixing the same `shared` correlate by `rho`."""
    return centre + np.sqrt(rho) * (shared - centre) + np.sqrt(1.0 - rho) * (private - centre)


def response_gains(rng: np.random.Generator, n: int, sd: float) -> np.ndarray:
    """Per-neuron multiplicative gains, log-normal with mean 1."""
    return rng.lognormal(-0.5 * sd * sd, sd, n)


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> tuple[complex, complex]:
    """Least-squares similarity transform (rotation, scale, translation) from `src` to `dst`
    (N x 2): in complex numbers a linear regression, dst ~ a * src + b. Returns (a, b)."""
    s = src[:, 0] + 1j * src[:, 1]
    d = dst[:, 0] + 1j * dst[:, 1]
    sc = s - s.mean()
    a = complex(np.vdot(sc, d - d.mean()) / max(float(np.vdot(sc, sc).real), 1e-12))
    return a, complex(d.mean() - a * s.mean())


def similarity_residual(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """What is left of `dst - src` (N x 2) after the best similarity transform from `src` to
    `dst`: the part rigid alignment cannot remove."""
    a, b = similarity_fit(src, dst)
    r = (dst[:, 0] + 1j * dst[:, 1]) - (a * (src[:, 0] + 1j * src[:, 1]) + b)
    return np.stack([r.real, r.imag], axis=1)


def field_grid(side: int = GRID_SIDE) -> np.ndarray:
    """(side^2, 2) points evenly covering the normalised field [-1, 1]^2."""
    g = np.linspace(-1.0, 1.0, side)
    x, y = np.meshgrid(g, g)
    return np.stack([x.ravel(), y.ravel()], axis=1)


@dataclass(frozen=True)
class Deformation:
    """A smooth displacement field over normalised coordinates, template -> this animal's
    anatomy: a sum of a few low-frequency plane waves, D(x) = sum_k a_k sin(k_k . x + phi_k),
    less its own best similarity transform (x -> L x + t over the field): the animal's rigid
    pose is its field-of-view transform's job, so all of this field survives rigid alignment."""

    wavevectors: np.ndarray  # K x 2, radians per normalised unit
    amplitudes: np.ndarray  # K x 2, displacement vector of each wave
    phases: np.ndarray  # K
    linear: np.ndarray  # 2 x 2, similarity part removed (scale-rotation minus identity)
    offset: np.ndarray  # 2, translation removed

    def displacement(self, points: np.ndarray) -> np.ndarray:
        waves = np.sin(points @ self.wavevectors.T + self.phases) @ self.amplitudes
        return waves - points @ self.linear.T - self.offset

    def apply(self, points: np.ndarray) -> np.ndarray:
        return points + self.displacement(points)

    def invert(self, points: np.ndarray, iterations: int = 12) -> np.ndarray:
        """Template coordinates of points in the deformed anatomy: x with x + D(x) = p, by fixed-
        point iteration (a contraction: the field's gradient is far below 1)."""
        x = points.copy()
        for _ in range(iterations):
            x = points - self.displacement(x)
        return x

    def non_rigid_rms(self) -> float:
        """RMS over the field of the displacement a similarity transform cannot remove."""
        grid = field_grid()
        res = similarity_residual(grid, self.apply(grid))
        return float(np.sqrt((res**2).sum(axis=1).mean()))

    @staticmethod
    def sample(rng: np.random.Generator, rms: float, cycles: float, n_modes: int = N_MODES) -> Deformation:
        """A random field of RMS `rms` over the field, none of it a similarity transform.
        Frequencies lie between half and all of `cycles` per field width (2 units): low enough to
        bend the anatomy as a whole, high enough not to be mostly a shift or scale."""
        freq = np.pi * cycles * rng.uniform(0.5, 1.0, n_modes)  # a cycle per field is pi rad/unit
        direction = rng.uniform(0.0, 2 * np.pi, n_modes)
        k = freq[:, None] * np.stack([np.cos(direction), np.sin(direction)], axis=1)
        amplitudes, phases = rng.normal(size=(n_modes, 2)), rng.uniform(0.0, 2 * np.pi, n_modes)
        grid = field_grid()
        waves = Deformation(k, amplitudes, phases, np.zeros((2, 2)), np.zeros(2))
        a, b = similarity_fit(grid, waves.apply(grid))
        m = a - 1.0
        field = Deformation(k, amplitudes, phases, np.array([[m.real, -m.imag], [m.imag, m.real]]),
                            np.array([b.real, b.imag]))
        # Everything is linear in the amplitudes, so one rescale hits the target exactly.
        gain = 0.0 if rms == 0.0 else rms / field.non_rigid_rms()
        return Deformation(k, amplitudes * gain, phases, field.linear * gain, field.offset * gain)
