"""The two joints of the run phase: the latest-frame slot and the dedicated inference thread.

``LatestSlot`` joins receive and infer: while the model is busy it holds at most one waiting
frame, and a newer one replaces it (the caller counts the old one as skipped). So the daemon
always decodes the newest frame and never builds a queue; a frame that finds the model idle
goes to it at once.

``InferenceThread`` runs blocking model calls one at a time, in submission order, on one
thread that lives as long as the service: ONNX Runtime / TensorRT state stays on one thread,
and the event loop never blocks. It is a daemon thread, so a model call that hangs forever
cannot stop the process from exiting (the watchdog and shutdown timeouts catch it first).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A one-item mailbox where the newest item wins. Event-loop thread only."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._closed = False

    def put(self, item: T) -> T | None:
        """Store ``item``; returns the item it replaced (never decoded), if any."""
        if self._closed:
            raise RuntimeError("slot is closed")
        replaced = self._item
        self._item = item
        return replaced

    def take(self) -> T | None:
        """The waiting item (None if there is none); the slot is empty afterwards."""
        item, self._item = self._item, None
        return item

    def close(self) -> None:
        """No more puts; ``take`` still returns the item already waiting."""
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return 0 if self._item is None else 1


_STOP = object()


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class InferenceThread:
    """One long-lived thread that runs submitted calls in order and reports back to the loop."""

    def __init__(self, name: str = "inference") -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.busy_since_ns = 0  # monotonic start of the running call; 0 while idle
        self.running_call = ""

    def start(self) -> None:
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args)``; the returned future resolves on the calling loop."""
        if not self._thread.is_alive():
            raise RuntimeError("inference thread is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, fn, args))
        return future

    def stalled_for_s(self) -> float:
        """How long the current call has been running (0.0 when idle)."""
        since = self.busy_since_ns
        return 0.0 if since == 0 else (time.monotonic_ns() - since) / 1e9

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            loop, future, fn, args = item
            self.running_call = getattr(fn, "__name__", "call")
            self.busy_since_ns = time.monotonic_ns()
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting task, which decides
                error = exc
            finally:
                self.busy_since_ns = 0
            try:
                loop.call_soon_threadsafe(_resolve, future, result, error)
            except RuntimeError:
                pass  # the loop closed while we ran (forced exit): nobody is waiting

    def stop(self, timeout: float) -> bool:
        """Let queued calls finish, then end the thread. Returns False if it did not end in time."""
        if not self._thread.is_alive():
            return True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()


async def run_in_daemon_thread(fn: Callable[..., T], *args: Any, name: str) -> T:
    """``await`` a blocking call on a fresh daemon thread (model loading, engine builds).

    Unlike ``asyncio.to_thread`` the thread never holds up the interpreter's exit: a daemon
    told to stop while it loads a model stops now instead of after the load.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def target() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        try:
            loop.call_soon_threadsafe(_resolve, future, result, error)
        except RuntimeError:
            pass  # the loop is gone: nobody is waiting any more

    threading.Thread(target=target, name=name, daemon=True).start()
    return await future

