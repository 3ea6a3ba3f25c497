"""Named simulation sizes. `tiny` is for unit tests and the demo, `bench` for the trainer benchmark;
`tiny-varied` and `bench-varied` are the same sizes with animals that also differ after rigid
alignment (tools/simulator/variation.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from tools.simulator.variation import AnimalVariation


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that shapes a simulated dataset (with the seed, it fixes every byte)."""

    name: str
    n_animals: int
    trials_per_animal: int
    trial_seconds: float
    frame_shape: tuple[int, int]  # H, W
    neural_rate_hz: float = 16.0
    pose_rate_hz: float = 100.0
    n_template_neurons: int = 60
    variation: AnimalVariation | None = None  # None: animals differ by the rigid transform and optics only

    def __post_init__(self) -> None:
        if self.n_animals < 1 or self.trials_per_animal < 1:
            raise ValueError(f"need at least one animal and one trial, got {self.n_animals} x {self.trials_per_animal}")
        if self.trial_seconds < 2.0:
            raise ValueError(f"trial_seconds={self.trial_seconds}: trials shorter than 2 s hold almost no behaviour")
        if len(self.frame_shape) != 2 or min(self.frame_shape) < 8:
            raise ValueError(f"frame_shape={self.frame_shape}: need (H, W) with both >= 8 pixels")
        if not (0 < self.neural_rate_hz < self.pose_rate_hz):
            raise ValueError("need 0 < neural_rate_hz < pose_rate_hz (pose drives the neurons at its finer clock)")
        if self.n_template_neurons < 8:
            raise ValueError("n_template_neurons must be >= 8")

    def with_overrides(self, **changes: Any) -> SimulationConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["frame_shape"] = list(self.frame_shape)
        if self.variation is None:
            del d["variation"]  # manifests of the original presets stay as they were
        return d


PRESETS: dict[str, SimulationConfig] = {
    "tiny": SimulationConfig(name="tiny", n_animals=4, trials_per_animal=2, trial_seconds=20.0,
                             frame_shape=(64, 64), n_template_neurons=40),
    "bench": SimulationConfig(name="bench", n_animals=8, trials_per_animal=3, trial_seconds=60.0,
                              frame_shape=(256, 256), n_template_neurons=120),
}
# The same sizes (so results compare one to one) with animals that also differ after alignment.
PRESETS["tiny-varied"] = replace(PRESETS["tiny"], name="tiny-varied", variation=AnimalVariation())
PRESETS["bench-varied"] = replace(PRESETS["bench"], name="bench-varied", variation=AnimalVariation())


def get_preset(name: str) -> SimulationConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
