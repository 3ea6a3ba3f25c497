"""Line writes on a thread of their own, for devices whose library blocks (NI-DAQmx, LabJack LJM).

A digital write on these devices is a library call that waits for a USB (or network) round
trip: LabJack's T7 datasheet gives about 0.7 ms through a high-speed USB hub and 2.3 ms on
other USB ports, and a cable being pulled can hold it for the library's timeout. The hot
thread must not wait for that, so ``QueuedLines`` keeps the lines' state itself and hands each
new state (every line, one int bit mask) to a writer thread through a ``SimpleQueue``: one
``put`` per line change, i.e. per event, never per frame. The writer writes the states in the
order they were decided, each one whole, so nothing is merged: a line that goes low and high
again reaches the device as two writes.

A write that fails ends the writer: it closes the device (it is the thread that used it; each
writer has the handle of the one open it serves, so a writer that outlives its close can never
touch the device of a later open) and keeps the error, which the hot thread raises as ``OutputFailed`` at the next line change and
which ``LineOutput``'s loop task finds through ``failure()`` before that. A device that takes
more than ``MAX_PENDING`` changes behind is failed the same way, so a stuck library call can
never make the queue grow without bound.
"""

from __future__ import annotations

import threading
from queue import SimpleQueue
from typing import Any

from decoder.outputs.base import OutputFailed

MAX_PENDING = 64  # line changes waiting for the device before it counts as failed
STOP_TIMEOUT_S = 5.0  # how long close waits for the writer to write what is queued


class LineWriter:
    """One thread that writes line states to one open device, in order."""

    def __init__(self, name: str, device: QueuedLines, handle: Any) -> None:
        self.failure: str | None = None  # set once, by the writer thread
        self._device = device
        self._handle = handle  # what open_device returned: this writer's device, and only its
        self._queue: SimpleQueue[int | None] = SimpleQueue()
        # A daemon thread: a library call stuck in the device must not keep the process alive.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, state: int) -> None:
        """Hot thread: queue one state; returns at once."""
        if self.failure is not None:
            raise OutputFailed(self.failure)
        if self._queue.qsize() >= MAX_PENDING:
            raise OutputFailed(f"{self._device.description}: {MAX_PENDING} line changes are waiting "
                               f"(the device does not keep up)")
        self._queue.put(state)

    def stop(self) -> None:
        """Helper thread: write what is queued (the all-low of a shutdown), then close the device."""
        self._queue.put(None)
        self._thread.join(STOP_TIMEOUT_S)

    def _run(self) -> None:
        try:
            while (state := self._queue.get()) is not None:
                try:
                    self._device.write_state(self._handle, state)
                except Exception as exc:  # OutputFailed, or a library error it did not expect
                    message = str(exc) if isinstance(exc, OutputFailed) else f"{type(exc).__name__}: {exc}"
                    waiting = self._queue.qsize()
                    if waiting:
                        message += f" ({waiting} later line change(s) not written)"
                    self.failure = message
                    return
        finally:
            self._device.close_device(self._handle)


class QueuedLines:
    """A ``LineDriver`` whose device is written by a ``LineWriter``; a device module fills in
    ``open_device`` (blocking; returns the open device's handle, raises ``OutputUnavailable``),
    ``write_state`` (writer thread, raises ``OutputFailed``) and ``close_device`` (writer
    thread; never raises)."""

    description: str

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description
        self._state = 0  # bit n: line n is high (hot thread only)
        self._writer: LineWriter | None = None

    # ---- helper thread -------------------------------------------------------------------

    def open(self) -> None:
        handle = self.open_device()
        self._state = 0
        self._writer = LineWriter(f"output-{self.name}-writer", self, handle)

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.stop()

    # ---- hot thread ----------------------------------------------------------------------

    def set_line(self, line: int, high: bool) -> None:
        bit = 1 << line
        self._put(self._state | bit if high else self._state & ~bit)

    def all_low(self) -> None:
        self._put(0)

    def _put(self, state: int) -> None:
        writer = self._writer
        if writer is None:
            raise OutputFailed(f"{self.description} is not open")
        writer.put(state)
        self._state = state

    # ---- event loop ----------------------------------------------------------------------

    def failure(self) -> str | None:
        writer = self._writer
        return None if writer is None else writer.failure

    # ---- the device ----------------------------------------------------------------------

    def open_device(self) -> Any:
        raise NotImplementedError

    def write_state(self, handle: Any, state: int) -> None:
        raise NotImplementedError

    def close_device(self, handle: Any) -> None:
        raise NotImplementedError
