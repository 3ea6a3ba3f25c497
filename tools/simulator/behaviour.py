"""Semi-Markov action sequences: which action, for how long, what comes next.

Bout durations are log-normal per action, clipped to the 0.3-5 s range seen in tethered flies;
transitions favour ethological chains (antennal <-> foreleg grooming, hindleg <-> abdominal
grooming, rest between bouts). Each animal perturbs the shared transition preferences a little.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.data.schema import ACTION_NAMES

N_ACTIONS = len(ACTION_NAMES)
MIN_BOUT_S = 0.3
MAX_BOUT_S = 5.0

# Median bout duration (s) per action, in ACTION_NAMES order.
MEDIAN_BOUT_S = np.array([2.2, 1.1, 2.8, 2.0, 1.7, 1.4, 1.4])
BOUT_SIGMA = 0.5  # log-normal spread

# Relative transition preferences (row: from, column: to); the diagonal is ignored.
#                 fw    bw    rest  fore  hind  ant   abd
_TRANSITIONS = np.array([
    [0.00, 0.10, 0.38, 0.13, 0.13, 0.12, 0.14],  # forward walking
    [0.50, 0.00, 0.30, 0.05, 0.05, 0.05, 0.05],  # backward walking
    [0.32, 0.12, 0.00, 0.14, 0.14, 0.14, 0.14],  # resting
    [0.16, 0.03, 0.20, 0.00, 0.06, 0.45, 0.10],  # foreleg grooming
    [0.16, 0.03, 0.20, 0.06, 0.00, 0.08, 0.47],  # hindleg grooming
    [0.14, 0.03, 0.20, 0.48, 0.05, 0.00, 0.10],  # antennal grooming
    [0.16, 0.03, 0.20, 0.06, 0.45, 0.10, 0.00],  # abdominal grooming
])


@dataclass(frozen=True)
class BehaviourParams:
    """One animal's behavioural statistics."""

    transitions: np.ndarray  # N_ACTIONS x N_ACTIONS, rows sum to 1, zero diagonal
    median_bout_s: np.ndarray  # N_ACTIONS

    @staticmethod
    def sample(rng: np.random.Generator, individuality: float = 0.25) -> BehaviourParams:
        """Shared preferences perturbed per animal (multiplicative log-normal noise)."""
        t = _TRANSITIONS * np.exp(individuality * rng.standard_normal(_TRANSITIONS.shape))
        np.fill_diagonal(t, 0.0)
        t /= t.sum(axis=1, keepdims=True)
        med = MEDIAN_BOUT_S * np.exp(0.5 * individuality * rng.standard_normal(N_ACTIONS))
        return BehaviourParams(transitions=t, median_bout_s=med)


def simulate_actions(n_frames: int, rate_hz: float, params: BehaviourParams, rng: np.random.Generator) -> np.ndarray:
    """Action index per pose frame (n_frames,) int64 from a semi-Markov chain."""
    labels = np.empty(n_frames, dtype=np.int64)
    # Start from the stationary-ish mix: uniform first action.
    action = int(rng.integers(N_ACTIONS))
    pos = 0
    while pos < n_frames:
        dur_s = params.median_bout_s[action] * np.exp(BOUT_SIGMA * rng.standard_normal())
        dur_s = float(np.clip(dur_s, MIN_BOUT_S, MAX_BOUT_S))
        n = max(1, int(round(dur_s * rate_hz)))
        labels[pos : pos + n] = action
        pos += n
        action = int(rng.choice(N_ACTIONS, p=params.transitions[action]))
    return labels


def bouts(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """(action, start, stop) runs of constant label, stop exclusive."""
    if len(labels) == 0:
        return []
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(labels)]])
    return [(int(labels[a]), int(a), int(b)) for a, b in zip(starts, stops)]
