"""The one rule that turns a microscope's pixel type into a recording/wire dtype.

Training data (the importers: TIFF, NumPy, NWB) and live frames (the bridges) go through the
same rule, so the model sees the same values in both:

* uint16, float32: unchanged.
* uint8: widened to uint16 (exact).
* int8, int16 (ScanImage's default, suite2p's registered movie): float32, which holds every
  value exactly, negative samples (detector noise around the PMT offset) included. A model
  trained on such data takes float32 frames, and a bridge reading int16 pages publishes float32.
* float64: narrowed to float32.

Anything else is refused (`PixelTypeError`, naming the type and the ones accepted).
"""

from __future__ import annotations

import numpy as np

_TARGET = {"uint16": np.uint16, "float32": np.float32, "uint8": np.uint16, "int8": np.float32,
           "int16": np.float32, "float64": np.float32}
ACCEPTED = tuple(_TARGET)


class PixelTypeError(ValueError):
    """The pixels' type has no exact (or float64 -> float32) mapping to a recording dtype."""


def recording_dtype(dtype: np.dtype | type) -> np.dtype:
    """The recording/wire dtype that pixels of ``dtype`` are stored and published as."""
    name = np.dtype(dtype).name  # byte order aside: writers convert it themselves
    if name not in _TARGET:
        raise PixelTypeError(f"pixels are {np.dtype(dtype)}; accepted: {', '.join(ACCEPTED)} (uint8 is widened to "
                             "uint16; int8/int16 and float64 become float32)")
    return np.dtype(_TARGET[name])


def recording_pixels(pixels: np.ndarray) -> np.ndarray:
    """`pixels` in the recording/wire dtype (the same array when nothing needs changing)."""
    target = recording_dtype(pixels.dtype)
    return pixels if pixels.dtype.name == target.name else pixels.astype(target)
