"""Multi-animal simulator: semi-Markov behaviour, 38-joint pose, 2-photon frames with a domain gap."""

from tools.simulator.presets import PRESETS, SimulationConfig, get_preset
from tools.simulator.simulate import make_animals, simulate_dataset, simulate_trial
from tools.simulator.variation import AnimalVariation

__all__ = ["PRESETS", "AnimalVariation", "SimulationConfig", "get_preset", "make_animals", "simulate_dataset",
           "simulate_trial"]
