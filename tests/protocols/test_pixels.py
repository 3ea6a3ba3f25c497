"""The pixel-type rule shared by the importers and the bridges (protocols/pixels.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protocols.pixels import PixelTypeError, recording_pixels


def test_each_accepted_type_maps_to_a_recording_dtype() -> None:
    signed = np.array([[-32768, -1, 0, 1, 32767]], np.int16)
    np.testing.assert_array_equal(recording_pixels(signed), signed)  # exact, negatives included
    assert recording_pixels(signed).dtype == np.float32
    assert recording_pixels(np.array([[255]], np.uint8)).dtype == np.uint16
    assert recording_pixels(np.array([[0.5]], np.float64)).dtype == np.float32
    same = np.zeros((2, 2), np.uint16)
    assert recording_pixels(same) is same


def test_other_types_are_refused_by_name() -> None:
    with pytest.raises(PixelTypeError, match="int32; accepted: uint16"):
        recording_pixels(np.zeros((2, 2), np.int32))


def test_the_importer_applies_the_same_rule(tmp_path: Path) -> None:
    import tifffile

    from trainer.data.importers import read_tiff_stack

    stack = np.random.default_rng(0).integers(-200, 3000, size=(4, 8, 8)).astype(np.int16)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    np.testing.assert_array_equal(read_tiff_stack(tmp_path / "s.tif"), recording_pixels(stack))
