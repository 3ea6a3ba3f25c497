"""Hardware outputs driven by the daemon's events: TTL lines on a serial microcontroller, an
NI-DAQ device or a LabJack.

One module per device behind ``LineDriver`` (base.py), named in ``DRIVERS`` by import path so
that a device's library (pyserial, nidaqmx, labjack-ljm) is imported only when its
``[outputs.<name>]`` section is configured. ``LineOutput`` (lines.py) turns events into line
changes the same way for every device; devices whose library blocks on each write get a
writer thread of their own (writer.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from decoder.outputs.lines import LineOutput
from decoder.settings import OutputSettings
from decoder.stats import Counters

# [outputs.<name>] -> ("module:class" of its LineDriver, built with that section's settings; the
# pyproject extra that installs its library)
DRIVERS: dict[str, tuple[str, str]] = {
    "serial": ("decoder.outputs.serial:SerialLines", "serial"),
    "nidaq": ("decoder.outputs.nidaq:NidaqLines", "nidaq"),
    "labjack": ("decoder.outputs.labjack:LabjackLines", "labjack"),
}


class OutputConfigError(ValueError):
    """An output section that cannot work (its library is missing, an action the model lacks)."""


def build_outputs(settings: OutputSettings, counters: Counters, class_names: Sequence[str]) -> list[LineOutput]:
    """The configured outputs, not yet opened."""
    outputs: list[LineOutput] = []
    for name, (path, extra) in DRIVERS.items():
        section = getattr(settings, name)
        if section is None:
            continue
        unknown = sorted(set(section.lines) - set(class_names))
        if unknown:
            raise OutputConfigError(
                f"outputs.{name}.lines names actions the model does not have: {', '.join(unknown)} "
                f"(the model's actions: {', '.join(class_names)})"
            )
        module_name, class_name = path.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise OutputConfigError(f"outputs.{name} needs a library that is not installed: {exc} "
                                    f"(pip install 'actionloop[{extra}]')") from None
        driver = getattr(module, class_name)(section)
        outputs.append(LineOutput(name, driver, section, counters))
    return outputs
