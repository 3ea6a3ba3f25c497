"""TTL lines on an NI-DAQ device's digital outputs, through NI-DAQmx (``nidaqmx``).

One task holds one digital output channel per configured line, in the order of
``physical_lines`` (line n of ``lines`` is the n-th), and is started when the device is opened,
so that each write is one on-demand ``DAQmxWriteDigitalLines`` call rather than an implicit
start and stop of the task around every write. Writes run on the writer thread (writer.py):
a USB device's write waits for its round trip. The ``nidaqmx`` package alone is not enough:
it calls NI's NI-DAQmx driver (libnidaqmx), which must be installed; without it, opening
fails with a message that says so, and the daemon runs on without the output.

Failures: any ``nidaqmx.errors.Error`` (``DaqNotFoundError`` when the driver is missing,
``DaqError`` for an unknown device, lines reserved by another task, a USB device removed) is
``OutputUnavailable`` when opening and ``OutputFailed`` when writing; the task is then closed
and a new one made when the device is opened again.
"""

from __future__ import annotations

import contextlib
from typing import Any

import nidaqmx  # imported only when [outputs.nidaq] is configured
import nidaqmx.constants
import nidaqmx.errors
import nidaqmx.stream_writers
import numpy as np

from decoder.outputs.base import OutputFailed, OutputUnavailable
from decoder.outputs.writer import QueuedLines
from decoder.settings import NidaqOutputSettings

WRITE_TIMEOUT_S = 1.0  # a write waits at most this long for the device (then it has failed)
DRIVER_MISSING = ("the NI-DAQmx driver is not installed on this machine (the nidaqmx package found no "
                  "NI-DAQmx library); install NI-DAQmx from NI for this operating system")


def describe(exc: Exception) -> str:
    """An NI-DAQmx error on one line: its first line and its status code."""
    if isinstance(exc, nidaqmx.errors.DaqNotFoundError):
        return DRIVER_MISSING
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    code = getattr(exc, "error_code", None)
    return f"{first} (NI-DAQmx status {code})" if code is not None else first


class NidaqTask:
    """One open device: the started task, its writer and the array each write sends."""

    def __init__(self, task: Any, stream: Any, n_lines: int) -> None:
        self.task, self.stream = task, stream
        self.values = np.zeros(n_lines, dtype=bool)  # one per channel, reused by each write


class NidaqLines(QueuedLines):
    def __init__(self, settings: NidaqOutputSettings) -> None:
        super().__init__("nidaq", f"NI-DAQmx {settings.physical_lines}")
        self.line_names = settings.line_names

    def open_device(self) -> NidaqTask:
        try:
            task = nidaqmx.Task()
        except nidaqmx.errors.Error as exc:
            raise OutputUnavailable(f"cannot open {self.description}: {describe(exc)}") from None
        try:
            for name in self.line_names:
                task.do_channels.add_do_chan(name, line_grouping=nidaqmx.constants.LineGrouping.CHAN_PER_LINE)
            task.start()
            stream = nidaqmx.stream_writers.DigitalMultiChannelWriter(task.out_stream, auto_start=False)
            stream.verify_array_shape = False  # the array is made here with one value per channel
        except nidaqmx.errors.Error as exc:
            with contextlib.suppress(Exception):
                task.close()
            raise OutputUnavailable(f"cannot open {self.description}: {describe(exc)}") from None
        return NidaqTask(task, stream, len(self.line_names))

    def write_state(self, handle: NidaqTask, state: int) -> None:
        values = handle.values
        for n in range(len(values)):
            values[n] = (state >> n) & 1
        try:
            handle.stream.write_one_sample_one_line(values, timeout=WRITE_TIMEOUT_S)
        except nidaqmx.errors.Error as exc:
            raise OutputFailed(f"write to {self.description} failed: {describe(exc)}") from None

    def close_device(self, handle: NidaqTask) -> None:
        with contextlib.suppress(Exception):  # a removed device cannot be closed cleanly
            handle.task.close()
