"""TTL lines on a LabJack T4/T7/T8's digital I/O, through LJM (``labjack-ljm``).

Opened with ``ljm.openS(device_type, connection_type, identifier)`` and a first write of
every line low, which fails the open if the model lacks one of the lines; each write is one
``eWriteNames`` call that sets every configured line (FIO0, EIO3, ...) at once, one Modbus
packet, on the writer thread (writer.py): it waits for a USB or network round trip. Writing a
line's register also makes it an output (LabJack's T-series datasheet, section 13); on a T4
the flexible lines (FIO4-7, EIO0-3) stay analog inputs until they are set digital
(``DIO_ANALOG_ENABLE``, or in Kipling), which this driver leaves to the operator.

The ``labjack-ljm`` package alone is not enough: it loads LabJack's LJM C library
(libLabJackM.so), which must be installed. Without it the package prints a line when
imported (kept off the daemon's log here) and every call fails; opening then fails with a
message that says so, and the daemon runs on without the output. ``LJMError`` (and the
errors of a library that could not be loaded) is ``OutputUnavailable`` when opening and
``OutputFailed`` when writing; the handle is then closed and the device opened again later.
"""

from __future__ import annotations

import contextlib
import io

from decoder.outputs.base import OutputFailed, OutputUnavailable
from decoder.outputs.writer import QueuedLines
from decoder.settings import LabjackOutputSettings

# imported only when [outputs.labjack] is configured; a missing LJM library is printed, not raised
with contextlib.redirect_stdout(io.StringIO()) as _printed:
    from labjack import ljm
LOAD_ERROR = _printed.getvalue().strip()
LIBRARY_MISSING = "the LabJack LJM library (libLabJackM.so) is not installed on this machine; install LJM from LabJack"


def describe(exc: Exception) -> str:
    """An LJM error (or a library that was never loaded: every call is an AttributeError)."""
    if isinstance(exc, ljm.LJMError):
        return str(exc)
    if isinstance(exc, AttributeError):
        return LIBRARY_MISSING + (f" ({LOAD_ERROR})" if LOAD_ERROR else "")
    return f"{type(exc).__name__}: {exc}"


class LabjackLines(QueuedLines):
    def __init__(self, settings: LabjackOutputSettings) -> None:
        super().__init__("labjack", f"LabJack {settings.device_type} {settings.connection_type} "
                                    f"{settings.identifier} {','.join(settings.physical_lines)}")
        self.device_type = settings.device_type
        self.connection_type = settings.connection_type
        self.identifier = settings.identifier
        self.line_names = list(settings.physical_lines)

    def open_device(self) -> int:
        try:
            handle = ljm.openS(self.device_type, self.connection_type, self.identifier)
        except (ljm.LJMError, AttributeError, TypeError) as exc:
            raise OutputUnavailable(f"cannot open {self.description}: {describe(exc)}") from None
        try:  # every line low, here: a line this model lacks fails the open, not a write later
            ljm.eWriteNames(handle, len(self.line_names), self.line_names, [0.0] * len(self.line_names))
        except (ljm.LJMError, AttributeError, TypeError) as exc:
            self.close_device(handle)
            raise OutputUnavailable(f"cannot open {self.description}: {describe(exc)}") from None
        return handle

    def write_state(self, handle: int, state: int) -> None:
        values = [float((state >> n) & 1) for n in range(len(self.line_names))]
        try:
            ljm.eWriteNames(handle, len(values), self.line_names, values)
        except (ljm.LJMError, AttributeError, TypeError) as exc:
            raise OutputFailed(f"write to {self.description} failed: {describe(exc)}") from None

    def close_device(self, handle: int) -> None:
        with contextlib.suppress(Exception):  # a device that is gone cannot be closed cleanly
            ljm.close(handle)
