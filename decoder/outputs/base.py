"""The one small interface every TTL output device implements (serial today; NI-DAQ, LabJack later).

A driver knows only how to open its device and set lines; what drives the lines (events,
confidence, state kept across a reconnect) is ``LineOutput`` (decoder/outputs/lines.py), the
same for every device.
"""

from __future__ import annotations

from typing import Protocol


class OutputUnavailable(RuntimeError):
    """The device cannot be opened now (unplugged, busy, no permission); tried again later."""


class OutputFailed(RuntimeError):
    """An open device stopped working (a write failed); it is closed and opened again later."""


class LineDriver(Protocol):
    """Digital output lines of one device.

    ``open`` may block (it runs on a helper thread, never on the hot path) and raises
    ``OutputUnavailable``. ``set_line``, ``all_low`` and ``close`` run on the hot-path thread
    (``close`` also at shutdown): they must return at once, never wait for the device, and raise
    only ``OutputFailed``.
    """

    description: str  # for logs and status: "serial /dev/ttyACM0 at 115200 baud"

    def open(self) -> None: ...

    def set_line(self, line: int, high: bool) -> None: ...

    def all_low(self) -> None: ...

    def close(self) -> None: ...
