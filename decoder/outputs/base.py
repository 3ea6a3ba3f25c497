"""The one small interface every TTL output device implements (serial, NI-DAQ, LabJack).

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

    ``open`` and ``close`` may block (they run on a helper thread, never on the hot path;
    ``LineOutput`` waits for a close at most ``CLOSE_TIMEOUT_S``); ``open`` raises
    ``OutputUnavailable``. ``set_line`` and ``all_low`` run on the hot-path thread (and once at
    shutdown on the event loop): they must return at once, never wait for the device, and raise
    only ``OutputFailed``. ``failure`` says whether a write that failed off the hot path (on a
    driver's own writer thread) has broken the open device; it is asked on the event loop.
    """

    description: str  # for logs and status: "serial /dev/ttyACM0 at 115200 baud"

    def open(self) -> None: ...

    def set_line(self, line: int, high: bool) -> None: ...

    def all_low(self) -> None: ...

    def close(self) -> None: ...

    def failure(self) -> str | None: ...
