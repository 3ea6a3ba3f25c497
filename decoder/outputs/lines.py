"""Events to TTL lines, for any ``LineDriver``, with failures that never reach decoding.

On the hot-path thread, per event (never per frame): an onset of a mapped action at or above
``min_confidence`` drives its line high, the offset drives it low again (an offset whose onset
was held back changes nothing); one non-blocking write, counted. Which lines should be high is
remembered whether or not the device works, so that a device opened again is first set all
low and then gets those lines back: after a reconnect the lines say what the daemon decides
now, not what it decided before the cable was pulled.

A write that fails marks the output failed (one log line) and decoding goes on; the events
that could not be written are counted (``output_lost``). Everything that may block (open,
close) runs on a helper thread driven by the event loop's ``maintain`` task, every
``reopen_interval_s``; a reopened device is handed back to the hot thread through its mailbox.
A driver that writes on a thread of its own (NI-DAQ, LabJack: writer.py) learns of a failed
write after the fact; ``maintain`` asks it every ``reopen_interval_s`` and has the hot thread
mark the output failed, so that it is reopened without waiting for the next event.

States: ``up`` (the hot thread writes) -> ``failed`` (a write failed; hot thread) -> ``down``
(closed; loop) -> ``opening`` (loop) -> ``up`` again (hot thread, after the resync writes) or
``down`` (open failed). Each transition is made by the one thread named, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import structlog

from decoder.outputs.base import LineDriver, OutputFailed, OutputUnavailable
from decoder.settings import LineOutputSettings
from decoder.stats import Counters
from decoder.worker import run_in_daemon_thread
from protocols.messages import Event
from protocols.ttl import MAX_LINE

if TYPE_CHECKING:
    from decoder.worker import HotThread

log = structlog.get_logger(__name__)

UP, FAILED, DOWN, OPENING = "up", "failed", "down", "opening"
CLOSE_TIMEOUT_S = 2.0  # a tty close can wait for unsent bytes; never longer than this at shutdown
STILL_DOWN_LOG_S = 60.0  # a device that stays missing is logged again at most this often


class LineOutput:
    """One device's lines, driven by the daemon's onset/offset events."""

    def __init__(self, name: str, driver: LineDriver, settings: LineOutputSettings, counters: Counters) -> None:
        self.name = name
        self.driver = driver
        self.lines = dict(settings.lines)
        self.min_confidence = settings.min_confidence
        self.reopen_interval_s = settings.reopen_interval_s
        self.counters = counters
        self.state = DOWN
        self.high = [False] * (MAX_LINE + 1)  # what each line should be now (kept while down)
        self.last_error = ""
        self.open_failures = 0
        self._last_down_log = -float("inf")
        self._is_open = False  # the driver holds an open device (set and cleared on the loop)

    # ---- hot-path thread -----------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """An onset or offset just published. Returns at once; never raises."""
        line = self.lines.get(event.action)
        if line is None:
            return
        if event.kind == "onset":
            if event.confidence < self.min_confidence:
                return
            level = True
        elif self.high[line]:
            level = False
        else:
            return  # its onset was held back: the line never went high
        self.high[line] = level
        if self.state != UP:
            self.counters.output_lost += 1
            return
        try:
            self.driver.set_line(line, level)
        except Exception as exc:  # OutputFailed, or a driver bug: either way decoding goes on
            self.counters.output_lost += 1
            self._failed(exc)
            return
        self.counters.output_writes += 1

    def attach(self) -> None:
        """The device was just opened: all lines low, then the ones that should be high."""
        try:
            self.driver.all_low()
            writes = 1
            for line, level in enumerate(self.high):
                if level:
                    self.driver.set_line(line, True)
                    writes += 1
        except Exception as exc:
            self._failed(exc)
            return
        self.counters.output_writes += writes
        self.state = UP
        log.info("output open", output=self.name, device=self.driver.description,
                 lines_high=[n for n, level in enumerate(self.high) if level])

    def check_failure(self) -> None:
        """A write that failed on the driver's own writer thread: failed now, not at the next event."""
        failure = self.driver.failure()
        if self.state == UP and failure is not None:
            self._failed(OutputFailed(failure))

    def _failed(self, exc: Exception) -> None:
        self.state = FAILED
        self.counters.output_failures += 1
        self.last_error = str(exc) if isinstance(exc, OutputFailed) else f"{type(exc).__name__}: {exc}"
        log.error("output failed; decoding goes on, the device is opened again", output=self.name,
                  device=self.driver.description, error=self.last_error, retry_s=self.reopen_interval_s)

    # ---- event loop ----------------------------------------------------------------------

    async def start(self) -> None:
        """Before the hot thread runs: open the device if it is there (else ``maintain`` retries)."""
        if await self._open():
            self.attach()

    async def maintain(self, thread: HotThread) -> None:
        """Close a failed device and open a missing one, every ``reopen_interval_s``, for ever."""
        while True:
            await asyncio.sleep(self.reopen_interval_s)
            if self.state == UP and self.driver.failure() is not None:
                thread.post(self.check_failure)  # a writer thread's failure, marked by the hot thread
            if self.state == FAILED:
                await self._close()
                self.state = DOWN
            if self.state == DOWN and await self._open():
                self.counters.output_reopens += 1
                if not thread.post(self.attach):  # runs between two frames; sets the state
                    await self._close()  # the hot thread is gone: shutting down
                    self.state = DOWN

    async def stop(self, hot_thread_stopped: bool) -> None:
        """At shutdown: every line low (if the device works), then close it."""
        if self.state == UP and hot_thread_stopped:
            try:
                self.driver.all_low()
                self.counters.output_writes += 1
            except Exception as exc:
                log.warning("output: could not set the lines low at shutdown", output=self.name, error=str(exc))
        if self._is_open:  # (an open still running on its helper thread ends with the process)
            await self._close()
        self.state = DOWN

    async def _open(self) -> bool:
        self.state = OPENING
        try:
            await run_in_daemon_thread(self.driver.open, name=f"output-{self.name}-open")
        except OutputUnavailable as exc:
            self.state = DOWN
            self.open_failures += 1
            self.last_error = str(exc)
            now = time.monotonic()
            if now - self._last_down_log >= STILL_DOWN_LOG_S:
                self._last_down_log = now
                log.error("output device unavailable; decoding goes on without it, retrying", output=self.name,
                          device=self.driver.description, error=self.last_error, retry_s=self.reopen_interval_s,
                          attempts=self.open_failures)
            return False
        self._is_open = True
        self._last_down_log = -float("inf")
        return True

    async def _close(self) -> None:
        self._is_open = False
        try:
            await asyncio.wait_for(run_in_daemon_thread(self.driver.close, name=f"output-{self.name}-close"),
                                   CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("output close did not finish in time; left to the operating system", output=self.name)

    def report(self) -> dict[str, Any]:
        """For the control socket's status reply."""
        return {
            "device": self.driver.description,
            "state": self.state,
            "lines": dict(self.lines),
            "lines_high": [n for n, level in enumerate(self.high) if level],
            "min_confidence": self.min_confidence,
            "open_failures": self.open_failures,
            "last_error": self.last_error,
        }
