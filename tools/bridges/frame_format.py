"""The frame format a bridge publishes, and the check every frame passes before it goes out.

The format comes from, in order: what the running daemon announces (its control `status`
reply carries the bundle's ``frame_shape`` and ``frame_dtype``), what the operator configured
(``--shape``, ``--dtype``), or, for the shape only, the first frame published. A frame of
another shape or dtype is refused, except for the importers' exact conversions
(protocols/pixels.py: uint8 widened to uint16, int8/int16 such as ScanImage's default to
float32), so the model sees the same values live as in training.
Pixels go out native little-endian and C-contiguous, as the wire format requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from protocols.client import ControlClient
from protocols.messages import FRAME_DTYPES
from protocols.pixels import PixelTypeError, recording_pixels


class FrameRefused(ValueError):
    """This frame does not match the format being published."""


@dataclass
class FrameFormat:
    dtype: np.dtype[Any]
    shape: tuple[int, int] | None  # None until the first frame fixes it
    source: str                    # where the format came from, for the logs

    def __post_init__(self) -> None:
        if self.dtype.name not in FRAME_DTYPES:
            raise ValueError(f"dtype {self.dtype} is not a wire dtype ({', '.join(FRAME_DTYPES)})")

    @classmethod
    def from_daemon(cls, endpoint: str, timeout_s: float = 5.0, **client_kwargs: Any) -> FrameFormat:
        """Ask a running daemon which frames its model takes (raises TimeoutError if it does not answer)."""
        client = ControlClient(endpoint, **client_kwargs)
        try:
            data = client.request("status", timeout=timeout_s).data or {}
        finally:
            client.close()
        try:
            shape = tuple(int(v) for v in data["frame_shape"])
            dtype = np.dtype(str(data["frame_dtype"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the daemon at {endpoint} did not announce frame_shape/frame_dtype ({exc})") from None
        if len(shape) != 2:
            raise ValueError(f"the daemon at {endpoint} announced frame_shape {list(shape)}; expected [height, width]")
        return cls(dtype, (shape[0], shape[1]), f"announced by the daemon at {endpoint}")

    def conform(self, pixels: np.ndarray) -> np.ndarray:
        """`pixels` ready to publish (the same array when nothing needs changing); raises FrameRefused."""
        if pixels.ndim != 2:
            raise FrameRefused(f"page holds an array of shape {tuple(pixels.shape)}; frames are 2-D (one sample per pixel)")
        little = pixels.dtype.newbyteorder("<")
        if pixels.dtype != little:
            pixels = pixels.astype(little)
        source = pixels.dtype.name
        try:
            pixels = recording_pixels(pixels)  # the importers' rule: uint8 -> uint16, int16 -> float32
        except PixelTypeError as exc:
            raise FrameRefused(f"page: {exc}") from None
        if pixels.dtype != self.dtype:
            as_published = "" if source == pixels.dtype.name else f" (published as {pixels.dtype.name}, as the importers store it)"
            raise FrameRefused(f"page is {source}{as_published}, the published frames are {self.dtype.name} ({self.source})")
        shape = (int(pixels.shape[0]), int(pixels.shape[1]))
        if self.shape is None:
            self.shape = shape
            self.source = "fixed by the first frame"
        elif shape != self.shape:
            raise FrameRefused(f"page is {shape[0]} x {shape[1]}, the published frames are "
                               f"{self.shape[0]} x {self.shape[1]} ({self.source})")
        return np.ascontiguousarray(pixels)
