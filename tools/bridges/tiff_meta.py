"""What acquisition software writes into its TIFF pages that the bridge uses, read with tifffile.

- ScanImage (2016 and later) writes the settings into every page's Software tag
  (``SI.hChannels.channelSave = [1;2]``: the saved channels, interleaved page by page) and the
  per-frame data into its ImageDescription (``frameTimestamps_sec = 0.033``: seconds since the
  acquisition started). Both are MATLAB-style ``key = value`` lines, parsed with
  `tifffile.matlabstr2py` (what tifffile's ScanImage support uses).
- ImageJ hyperstacks say ``channels=N`` in the first page's description.
"""

from __future__ import annotations

from typing import Any

import tifffile

SI_TIMESTAMP_KEY = "frameTimestamps_sec"
SI_CHANNELS_KEY = "SI.hChannels.channelSave"


def _matlab(text: str) -> dict[str, Any]:
    try:
        parsed = tifffile.matlabstr2py(text)
    except Exception:  # a description that only looks like ScanImage's
        return {}
    return parsed if isinstance(parsed, dict) else {}


def scanimage_timestamp_s(page: tifffile.TiffPage) -> float | None:
    """ScanImage's acquisition time of this page's frame (s since the acquisition started), if present."""
    description = page.description
    if SI_TIMESTAMP_KEY not in description:
        return None
    value = _matlab(description).get(SI_TIMESTAMP_KEY)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if value >= 0 and value == value and value != float("inf") else None


def declared_channels(page: tifffile.TiffPage) -> int | None:
    """Channels interleaved page by page, as the file's first page declares them (None: not declared)."""
    if page.software.startswith("SI."):
        saved = _matlab(page.software).get(SI_CHANNELS_KEY)
        if isinstance(saved, int) and not isinstance(saved, bool):
            return 1
        if isinstance(saved, list) and saved:
            return len(saved)
    if page.is_imagej:
        for line in page.description.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "channels" and value.strip().isdigit() and int(value) >= 1:
                return int(value)
    return None
