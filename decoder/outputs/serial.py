"""TTL lines on a USB-serial microcontroller: one byte per line change (protocols/ttl.py).

pyserial opens and configures the port (raw mode, bit rate, an exclusive lock so that no
second program writes to it). Writes are one non-blocking ``os.write`` on its file descriptor,
never pyserial's ``write``: with a zero write timeout that loops until the kernel takes the
bytes, so a device that stops reading would hold the hot path. A byte the kernel does not take
at once (the device's buffer is full) or a write error (the cable was pulled) is a failure: the
port is closed and ``LineOutput`` opens it again later.
"""

from __future__ import annotations

import contextlib
import os

import serial  # pyserial; imported only when [outputs.serial] is configured

from decoder.outputs.base import OutputFailed, OutputUnavailable
from decoder.settings import SerialOutputSettings
from protocols.ttl import ALL_LOW_BYTES, line_byte


class SerialLines:
    def __init__(self, settings: SerialOutputSettings) -> None:
        self.port_name = settings.port
        self.baud = settings.baud
        self.description = f"serial {settings.port} at {settings.baud} baud"
        self._port: serial.Serial | None = None
        self._fd = -1

    def open(self) -> None:
        port = serial.Serial()
        port.port = self.port_name
        port.baudrate = self.baud
        port.exclusive = True
        try:
            port.open()  # O_NONBLOCK: never waits for a carrier
        except (serial.SerialException, OSError, ValueError) as exc:
            raise OutputUnavailable(f"cannot open {self.port_name}: {exc}") from None
        self._port, self._fd = port, port.fileno()

    def set_line(self, line: int, high: bool) -> None:
        self._write(line_byte(line, high))

    def all_low(self) -> None:
        self._write(ALL_LOW_BYTES)

    def _write(self, data: bytes) -> None:
        if self._fd < 0:
            raise OutputFailed(f"{self.port_name} is not open")
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            raise OutputFailed(f"{self.port_name} takes no more bytes (the device stopped reading)") from None
        except OSError as exc:
            raise OutputFailed(f"write to {self.port_name} failed: {exc.strerror or exc}") from None
        if written != len(data):
            raise OutputFailed(f"{self.port_name} took {written} of {len(data)} bytes (the device stopped reading)")

    def failure(self) -> str | None:
        return None  # every write is made (and fails) on the hot path itself

    def close(self) -> None:
        port, self._port, self._fd = self._port, None, -1
        if port is not None:
            with contextlib.suppress(Exception):  # a device that is gone cannot be closed cleanly
                port.close()
