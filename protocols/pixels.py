"""The one rule that turns a microscope's pixel type into a recording/wire dtype.

Training data (the importers) and live frames (the bridges) go through the same function, so the
model sees the same values in both:

* uint16, float32: unchanged.
* uint8: widened to uint16 (lossless).
* int16 (ScanImage's default, suite2p's registered movie): clipped at 0 and stored as uint16.
  Samples below 0 are detector noise around the PMT offset; the model takes log1p of
  non-negative counts anyway. Clipping happens before the encoder's average pooling, so a pooled
  pixel near the offset reads slightly higher than the signed mean would, identically in training
  and serving.
* float64: narrowed to float32.

Anything else is refused (`PixelTypeError`, naming the type and the ones accepted).
"""

from __future__ import annotations

import numpy as np

ACCEPTED = ("uint16", "float32", "uint8", "int16", "float64")


class PixelTypeError(ValueError):
    """The pixels' type has no lossless-enough mapping to a recording dtype."""


def recording_pixels(pixels: np.ndarray) -> np.ndarray:
    """`pixels` in the recording/wire dtype (the same array when nothing needs changing)."""
    name = pixels.dtype.name  # byte order aside: the writers convert it themselves
    if name in ("uint16", "float32"):
        return pixels
    if name == "uint8":
        return pixels.astype(np.uint16)
    if name == "int16":
        return np.clip(pixels, 0, None).astype(np.uint16)
    if name == "float64":
        return pixels.astype(np.float32)
    raise PixelTypeError(f"pixels are {pixels.dtype}; accepted: {', '.join(ACCEPTED)} "
                         "(int16 is clipped at 0 and uint8 widened to uint16; float64 narrowed to float32)")
