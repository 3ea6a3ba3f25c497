"""38-joint DeepFly3D-like kinematics of a tethered fly, driven by the action sequence.

Body frame in mm: x anterior, y left, z up; the thorax is fixed (tethered on a ball). Each leg
is a chain ThC -> CTr -> FTi -> TiTa -> Claw whose segments point along a yaw (protraction) and
a per-segment elevation. Actions set target angles (tripod gait for walking, rubbing and
sweeping for grooming); a short low-pass makes transitions continuous. Per animal: limb-length
scale, posture offsets and gait frequency. Tracking adds Gaussian noise and occasional outliers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from trainer.data.schema import ACTION_NAMES, JOINT_NAMES, LEGS, N_JOINTS, leg_joint_indices
from tools.simulator.behaviour import bouts

A = {name: i for i, name in enumerate(ACTION_NAMES)}
DEG = np.pi / 180.0
N_LEGS = len(LEGS)
SIDE = np.array([-1.0 if leg[0] == "R" else 1.0 for leg in LEGS])  # y sign
POSITION = [leg[1] for leg in LEGS]  # F, M, H
IS_FRONT = np.array([p == "F" for p in POSITION])
IS_MID = np.array([p == "M" for p in POSITION])
IS_HIND = np.array([p == "H" for p in POSITION])
# Tripod gait: (RF, LM, RH) in phase, (LF, RM, LH) in anti-phase.
TRIPOD_PHASE = np.array([0.0 if leg in ("RF", "LM", "RH") else np.pi for leg in LEGS])

COXA_ATTACH = np.array(
    [[0.45 if p == "F" else 0.15 if p == "M" else -0.12, 0.14 * s, 0.0] for p, s in zip(POSITION, SIDE)]
)
BASE_YAW = np.array([35.0 if p == "F" else 90.0 if p == "M" else 145.0 for p in POSITION]) * DEG
SEGMENT_MM = np.array([[0.35, 0.55 if p == "F" else 0.6, 0.5, 0.5] for p in POSITION])  # 6 x 4
# Rest elevations of coxa, femur, tibia, tarsus (deg), and zero protraction.
REST = np.array([[0.0, -65.0, 25.0, -60.0, -80.0]] * N_LEGS) * DEG  # [protraction, th_c, th_f, th_t, th_ta]

ANTENNA = np.array([[0.85, -0.09, 0.25], [0.85, 0.09, 0.25]])
STRIPES = np.array([[-0.55, 0.18, 0.05], [-0.80, 0.16, 0.02], [-1.05, 0.12, -0.02]])  # left side; y mirrored for right

TRACKING_NOISE_MM = 0.015
OUTLIER_PROB = 0.002
OUTLIER_MM = 0.4


@dataclass(frozen=True)
class PoseParams:
    """One animal's body: limb lengths, posture offsets, gait speed."""

    segment_mm: np.ndarray  # 6 x 4
    posture_offset: np.ndarray  # 6 x 5 rad
    gait_scale: float
    landmark_offset: np.ndarray  # 8 x 3 mm (2 antennae, 6 stripes)

    @staticmethod
    def sample(rng: np.random.Generator) -> PoseParams:
        scale = rng.uniform(0.9, 1.1)
        return PoseParams(
            segment_mm=SEGMENT_MM * scale * rng.uniform(0.97, 1.03, SEGMENT_MM.shape),
            posture_offset=rng.normal(0.0, 3.0 * DEG, (N_LEGS, 5)),
            gait_scale=float(rng.uniform(0.85, 1.15)),
            landmark_offset=rng.normal(0.0, 0.02, (8, 3)),
        )


def _action_targets(labels: np.ndarray, rate_hz: float, params: PoseParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Target leg angles (T x 6 x 5) and abdomen bend (T,) for each frame."""
    n = len(labels)
    ang = np.broadcast_to(REST + params.posture_offset, (n, N_LEGS, 5)).copy()
    bend = np.zeros(n)
    for action, a, b in bouts(labels):
        t = np.arange(b - a)[:, None] / rate_hz  # time within bout
        phase0 = rng.uniform(0, 2 * np.pi)
        seg = ang[a:b]
        if action in (A["forward_walking"], A["backward_walking"]):
            forward = action == A["forward_walking"]
            freq = params.gait_scale * (rng.uniform(8.0, 12.0) if forward else rng.uniform(4.0, 6.0))
            phi = (1.0 if forward else -1.0) * 2 * np.pi * freq * t + TRIPOD_PHASE + phase0
            amp = (22.0 if forward else 14.0) * DEG
            seg[..., 0] += amp * np.sin(phi)
            # Swing while protracting (forward) / retracting (backward): lift femur and tibia.
            lift = np.maximum(0.0, np.cos(phi))
            seg[..., 2] += 25.0 * DEG * lift
            seg[..., 3] += 20.0 * DEG * lift
        elif action == A["resting"]:
            seg[..., 1:] += rng.normal(0, 2.0 * DEG, (1, N_LEGS, 4))
        elif action in (A["foreleg_grooming"], A["antennal_grooming"]):
            antennal = action == A["antennal_grooming"]
            freq = params.gait_scale * (rng.uniform(4.5, 6.0) if antennal else rng.uniform(6.0, 8.0))
            phi = 2 * np.pi * freq * t + SIDE * np.pi / 2 + phase0
            f = IS_FRONT
            seg[:, f, 0] = (55.0 if antennal else 45.0) * DEG + (12.0 * DEG if antennal else 5.0 * DEG) * np.sin(phi[:, f])
            seg[:, f, 1] = (10.0 if antennal else -20.0) * DEG
            seg[:, f, 2] = (65.0 if antennal else 40.0) * DEG
            seg[:, f, 3] = (-15.0 if antennal else -10.0) * DEG + 25.0 * DEG * np.sin(phi[:, f])
            seg[:, f, 4] = -25.0 * DEG + 20.0 * DEG * np.sin(phi[:, f] + 0.5)
            # Middle and hind legs widen to hold the body.
            seg[:, ~f, 0] -= 8.0 * DEG
        elif action in (A["hindleg_grooming"], A["abdominal_grooming"]):
            abdominal = action == A["abdominal_grooming"]
            freq = params.gait_scale * (rng.uniform(3.0, 4.5) if abdominal else rng.uniform(5.0, 7.0))
            h = IS_HIND
            if abdominal:
                # One hind leg sweeps under the abdomen; the abdomen bends towards it.
                side = rng.choice([-1.0, 1.0])
                leg = h & (SIDE == side)
                phi = 2 * np.pi * freq * t + phase0
                seg[:, leg, 0] = -35.0 * DEG + 10.0 * DEG * np.sin(phi)
                seg[:, leg, 1] = -80.0 * DEG
                seg[:, leg, 2] = 15.0 * DEG + 20.0 * DEG * np.sin(phi)
                seg[:, leg, 3] = -110.0 * DEG + 15.0 * DEG * np.sin(phi + 1.0)
                bend[a:b] = side * (0.6 + 0.2 * np.sin(phi[:, 0]))
            else:
                phi = 2 * np.pi * freq * t + SIDE * np.pi / 2 + phase0
                seg[:, h, 0] = -30.0 * DEG + 6.0 * DEG * np.sin(phi[:, h])
                seg[:, h, 1] = -30.0 * DEG
                seg[:, h, 2] = 35.0 * DEG
                seg[:, h, 3] = -20.0 * DEG + 25.0 * DEG * np.sin(phi[:, h])
                seg[:, h, 4] = -30.0 * DEG + 20.0 * DEG * np.sin(phi[:, h] + 0.5)
            seg[:, IS_FRONT | IS_MID, 0] += 6.0 * DEG
    return ang, bend


def _lowpass(x: np.ndarray, rate_hz: float, tau_s: float) -> np.ndarray:
    """First-order low-pass along time, started at the first value (no start-up transient)."""
    alpha = 1.0 - np.exp(-1.0 / (tau_s * rate_hz))
    flat = x.reshape(len(x), -1)
    zi = (1.0 - alpha) * flat[0]
    y, _ = lfilter([alpha], [1.0, -(1.0 - alpha)], flat, axis=0, zi=zi[None, :])
    return y.reshape(x.shape)


def forward_kinematics(angles: np.ndarray, bend: np.ndarray, params: PoseParams) -> np.ndarray:
    """Joint positions (T x 38 x 3, mm) from leg angles (T x 6 x 5) and abdomen bend (T,)."""
    n = len(angles)
    out = np.zeros((n, N_JOINTS, 3))
    yaw = SIDE * (BASE_YAW - angles[..., 0])  # protraction turns the leg towards anterior
    for leg_i, leg in enumerate(LEGS):
        idx = leg_joint_indices(leg)
        pos = np.broadcast_to(COXA_ATTACH[leg_i], (n, 3)).copy()
        out[:, idx[0]] = pos
        for k in range(4):
            th = angles[:, leg_i, 1 + k]
            ps = yaw[:, leg_i]
            d = np.stack([np.cos(th) * np.cos(ps), np.cos(th) * np.sin(ps), np.sin(th)], axis=1)
            pos = pos + params.segment_mm[leg_i, k] * d
            out[:, idx[k + 1]] = pos
    for s_i, side in enumerate("RL"):
        sign = -1.0 if side == "R" else 1.0
        out[:, JOINT_NAMES.index(f"{side}_antenna")] = ANTENNA[s_i] + params.landmark_offset[s_i]
        for k in range(3):
            base = STRIPES[k] * np.array([1.0, sign, 1.0]) + params.landmark_offset[2 + 3 * s_i + k]
            # Abdomen bends sideways and down, more towards the tip.
            shift = np.stack([np.zeros(n), 0.12 * (k + 1) * bend, -0.05 * (k + 1) * np.abs(bend)], axis=1)
            out[:, JOINT_NAMES.index(f"{side}_stripe{k + 1}")] = base + shift
    return out


def simulate_pose(labels: np.ndarray, rate_hz: float, params: PoseParams, rng: np.random.Generator) -> np.ndarray:
    """Noise-free 3D pose (T x 38 x 3 float64, mm) for an action sequence at `rate_hz`."""
    ang, bend = _action_targets(labels, rate_hz, params, rng)
    ang = _lowpass(ang, rate_hz, 0.04)
    bend = _lowpass(bend, rate_hz, 0.08)
    return forward_kinematics(ang, bend, params)


def add_tracking_noise(pose: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a pose tracker reports: Gaussian jitter plus occasional outlier joints (float32)."""
    noisy = pose + rng.normal(0.0, TRACKING_NOISE_MM, pose.shape)
    outliers = rng.random(pose.shape[:2]) < OUTLIER_PROB
    noisy[outliers] += rng.normal(0.0, OUTLIER_MM, (int(outliers.sum()), 3))
    return noisy.astype(np.float32)


KINEMATIC_FEATURES = ("front_claw_speed", "mid_claw_speed", "hind_claw_speed", "front_claw_height",
                      "hind_claw_height", "forward_velocity", "abdomen_bend")
# Typical scales (from long simulations) so features are O(1) for the neural tuning.
_KIN_SCALE = np.array([3.0, 3.0, 3.0, 0.3, 0.3, 0.25, 0.2])
_KIN_CENTER = np.array([3.0, 2.2, 4.0, -0.87, -0.85, 0.15, 0.0])


def kinematic_features(pose: np.ndarray, rate_hz: float) -> np.ndarray:
    """Pose-derived drives for neurons (T x len(KINEMATIC_FEATURES)), roughly centred, O(1)."""
    claws = np.array([leg_joint_indices(leg)[-1] for leg in LEGS])
    c = pose[:, claws]  # T x 6 x 3
    vel = np.gradient(c, 1.0 / rate_hz, axis=0)
    speed = np.linalg.norm(vel, axis=2)  # mm/s
    stance = c[..., 2] < np.median(c[..., 2])  # legs on the ball push it backwards
    fwd = -np.where(stance, vel[..., 0], 0.0).mean(axis=1)
    bend = pose[:, JOINT_NAMES.index("L_stripe3"), 1] + pose[:, JOINT_NAMES.index("R_stripe3"), 1]
    feats = np.stack([
        speed[:, IS_FRONT].mean(axis=1),
        speed[:, IS_MID].mean(axis=1),
        speed[:, IS_HIND].mean(axis=1),
        c[:, IS_FRONT, 2].mean(axis=1),
        c[:, IS_HIND, 2].mean(axis=1),
        fwd,
        bend,
    ], axis=1)
    feats = _lowpass(feats, rate_hz, 0.1)
    return (feats - _KIN_CENTER) / _KIN_SCALE
