"""The threads of the service and the handoffs between them and the event loop.

``HotThread`` runs ``HotPath.run`` (decoder/hotpath.py) on one dedicated thread that owns the
frame socket, the model and the action socket for the life of the service. The event loop
talks to it only through a ``Mailbox``: a deque of calls plus a one-byte wake-up on an
``inproc`` PAIR socket that the hot thread polls beside the frame socket. A call posted there
runs on the hot thread between two frames (a model swap, pause/resume, a status heartbeat to
publish); its result comes back to the loop through an ``asyncio`` future. Nothing per frame
crosses a thread: frames never touch the mailbox.

The hot thread is a daemon thread, so a model call that hangs forever cannot stop the process
from exiting (the watchdog and the shutdown timeout catch it first).

``run_in_daemon_thread`` runs one blocking call (model loading, engine builds) on a fresh
daemon thread and awaits it.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import zmq

if TYPE_CHECKING:
    from decoder.hotpath import HotPath

T = TypeVar("T")

_mailbox_ids = itertools.count()


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _report(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    try:
        loop.call_soon_threadsafe(_resolve, future, result, error)
    except RuntimeError:
        pass  # the loop closed meanwhile (forced exit): nobody is waiting


class Mailbox:
    """Calls from the event loop to the hot thread, run between two frames, in order.

    ``post`` is for the loop thread only, ``run_pending`` for the hot thread only: each end of
    the PAIR socket is used by one thread, and a deque's append/popleft are thread-safe.
    """

    def __init__(self, context: zmq.Context) -> None:  # type: ignore[type-arg]
        address = f"inproc://actionloop-mailbox-{next(_mailbox_ids)}"
        self.receiver = context.socket(zmq.PAIR)  # polled by the hot thread
        self.receiver.linger = 0
        self.receiver.bind(address)
        self._sender = context.socket(zmq.PAIR)
        self._sender.linger = 0
        self._sender.connect(address)
        self._calls: collections.deque[tuple[Callable[..., Any], tuple[Any, ...], Any, Any]] = collections.deque()

    def post(
        self,
        fn: Callable[..., Any],
        *args: Any,
        loop: asyncio.AbstractEventLoop | None = None,
        future: asyncio.Future[Any] | None = None,
    ) -> None:
        """Queue ``fn(*args)`` for the hot thread and wake it; ``future`` (on ``loop``) gets the result."""
        self._calls.append((fn, args, loop, future))
        try:
            self._sender.send(b"", zmq.NOBLOCK)
        except zmq.Again:
            pass  # wake-ups are already waiting (the hot thread is busy): the call is queued

    @property
    def pending(self) -> bool:
        """Calls are queued (some may have been left by a bounded ``run_pending``)."""
        return bool(self._calls)

    def run_pending(
        self,
        call: Callable[[Callable[..., Any], tuple[Any, ...]], Any],
        stopped: Callable[[], bool],
        limit: int | None = None,
    ) -> None:
        """Run queued calls through ``call(fn, args)``, at most ``limit`` of them (None: all);
        stops early once ``stopped()``. Calls left over stay queued (see ``pending``)."""
        receiver = self.receiver
        if receiver.get(zmq.EVENTS) & zmq.POLLIN:
            while True:  # the wake-ups first: every call they announce is already queued
                try:
                    receiver.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
        calls = self._calls
        ran = 0
        while calls and not stopped() and (limit is None or ran < limit):
            ran += 1
            fn, args, loop, future = calls.popleft()
            result: Any = None
            error: BaseException | None = None
            try:
                result = call(fn, args)
            except Exception as exc:  # handed to the awaiting task, which decides
                error = exc
                if future is None:
                    raise  # nobody awaits a fire-and-forget call: its failure stops the thread
            if future is not None and loop is not None:
                _report(loop, future, result, error)

    def close(self) -> None:
        self._sender.close(linger=0)
        self.receiver.close(linger=0)


class HotThread:
    """The hot path's thread: started once, stopped once; reports its end to the loop."""

    def __init__(self, name: str = "hot-path") -> None:
        self.name = name
        self._hot: HotPath | None = None
        self._mailbox: Mailbox | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, hot: HotPath, mailbox: Mailbox) -> asyncio.Future[None]:
        """Run ``hot.run()`` on the thread; the future resolves (or raises) when it returns."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._hot, self._mailbox, self._loop = hot, mailbox, loop

        def target() -> None:
            error: BaseException | None = None
            try:
                hot.run()
            except BaseException as exc:  # handed to the loop: the service stops with it
                error = exc
            _report(loop, done, None, error)

        self._thread = threading.Thread(target=target, name=self.name, daemon=True)
        self._thread.start()
        return done

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn(*args)`` on the hot thread between two frames; the future gets its result."""
        if not self.alive:
            raise RuntimeError("the hot-path thread is not running")
        assert self._mailbox is not None and self._loop is not None
        future: asyncio.Future[T] = self._loop.create_future()
        self._mailbox.post(fn, *args, loop=self._loop, future=future)
        return future

    def post(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Fire and forget (a heartbeat to publish); False if the thread is not running."""
        if not self.alive:
            return False
        assert self._mailbox is not None
        self._mailbox.post(fn, *args)
        return True

    def stop(self) -> None:
        """Ask the thread to return after the frame it is deciding (intake stops)."""
        if self.alive and self._hot is not None:
            self.post(self._hot.stop)

    def join(self, timeout: float) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def busy_since_ns(self) -> int:
        return 0 if self._hot is None else self._hot.busy_since_ns

    @property
    def running_call(self) -> str:
        return "" if self._hot is None else self._hot.running_call

    def stalled_for_s(self) -> float:
        """How long the current model call has been running (0.0 when idle)."""
        since = self.busy_since_ns
        return 0.0 if since == 0 else (time.monotonic_ns() - since) / 1e9

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


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
        _report(loop, future, result, error)

    threading.Thread(target=target, name=name, daemon=True).start()
    return await future
