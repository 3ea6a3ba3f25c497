"""Names shared by recordings, the simulator, labels and heads: classes, joints, schema version."""

from __future__ import annotations

from typing import Final

# Recording schema version written into every trial file; readers refuse other versions.
SCHEMA_VERSION: Final[int] = 1

# Class names, in this order, everywhere (docs/contracts.md).
ACTION_NAMES: Final[tuple[str, ...]] = (
    "forward_walking",
    "backward_walking",
    "resting",
    "foreleg_grooming",
    "hindleg_grooming",
    "antennal_grooming",
    "abdominal_grooming",
)

UNLABELLED: Final[int] = -1

# DeepFly3D layout: 38 points, 19 per side (right side first): three legs of five joints
# (thorax-coxa, coxa-trochanter, femur-tibia, tibia-tarsus, claw), one antenna, three
# abdominal stripes.
LEGS: Final[tuple[str, ...]] = ("RF", "RM", "RH", "LF", "LM", "LH")
LEG_JOINTS: Final[tuple[str, ...]] = ("ThC", "CTr", "FTi", "TiTa", "Claw")


def _side(side: str) -> list[str]:
    names = [f"{side}{pos}_{joint}" for pos in "FMH" for joint in LEG_JOINTS]
    names.append(f"{side}_antenna")
    names.extend(f"{side}_stripe{i}" for i in (1, 2, 3))
    return names


JOINT_NAMES: Final[tuple[str, ...]] = tuple(_side("R") + _side("L"))
N_JOINTS: Final[int] = len(JOINT_NAMES)
assert N_JOINTS == 38


def leg_joint_indices(leg: str) -> list[int]:
    """Indices of one leg's five joints (ThC -> Claw) in JOINT_NAMES, e.g. leg='LF'."""
    return [JOINT_NAMES.index(f"{leg}_{joint}") for joint in LEG_JOINTS]


def skeleton_edges() -> list[tuple[int, int]]:
    """Pairs of joint indices to draw as bones (legs as chains, stripes as a chain per side)."""
    edges: list[tuple[int, int]] = []
    for leg in LEGS:
        idx = leg_joint_indices(leg)
        edges.extend(zip(idx[:-1], idx[1:]))
    for side in "RL":
        stripes = [JOINT_NAMES.index(f"{side}_stripe{i}") for i in (1, 2, 3)]
        edges.extend(zip(stripes[:-1], stripes[1:]))
    return edges
