"""The decoder service: startup -> run -> shutdown, shaped like uvicorn's ``Server``.

- startup: load and verify the bundle, create and warm up the backend (off the loop), bind and
  connect the sockets, start the hot-path thread, then announce ready (log line, status
  message, systemd READY=1).
- run: the hot-path thread (decoder/hotpath.py) decodes every frame socket to socket; the
  event loop runs everything that is not per frame in one ``asyncio.TaskGroup``: heartbeat,
  health/watchdog, periodic summary (decoder/monitor.py) and the control socket
  (decoder/control.py), which pauses, resumes and reloads through the hot thread's mailbox, and
  for each TTL output (decoder/outputs/) a task that reopens a failed or missing device.
  A task or the hot thread that crashes cancels the others and ``serve()`` raises: the process
  exits non-zero.
- shutdown (first SIGTERM/SIGINT, or ``request_shutdown()``): stop intake (the hot thread
  returns after the frame it is deciding), publish a final status, close the sockets with a
  bounded linger, flush the decision log, STOPPING=1. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog
import zmq
import zmq.asyncio

from decoder.control import ControlRefused, ControlServer
from decoder.debounce import Debouncer, frames_for_duration
from decoder.decision_log import DecisionLogWriter
from decoder.handshake_monitor import HandshakeMonitor
from decoder.hotpath import HotPath
from decoder.model import LoadedModel, ModelLoader, ReloadNotAllowed, check_reload_allowed, load_model
from decoder.monitor import Monitor
from decoder.outputs import OutputConfigError, build_outputs
from decoder.outputs.lines import LineOutput
from decoder.pipeline import FramePipeline
from decoder.publisher import MirroredPublisher, Publisher
from decoder.security import Curve, SecurityError
from decoder.settings import DecoderSettings
from decoder.stats import Counters, RateLimiter
from decoder.systemd import SystemdNotifier
from decoder.worker import HotThread, Mailbox, run_in_daemon_thread
from protocols.bundle import BundleError
from protocols.messages import MAX_FRAME_BYTES, TOPIC_FRAME

if TYPE_CHECKING:
    from decoder.metrics import MetricsServer

log = structlog.get_logger(__name__)

STARTING, RUNNING, PAUSED, STOPPING = "starting", "running", "paused", "stopping"


class StartupError(RuntimeError):
    """The service could not start (bad bundle, unusable socket or path); says what to fix.

    ``exit_code`` 78 (EX_CONFIG) when restarting cannot help (bad bundle or configuration),
    1 otherwise (a port still held by a previous instance, say).
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class DecoderService:
    """The daemon. The constructor only stores its settings; ``serve()`` does the rest."""

    def __init__(self, settings: DecoderSettings, *, model_loader: ModelLoader = load_model) -> None:
        self.settings = settings
        self._load_model = model_loader
        self.state = STARTING
        self.ready = asyncio.Event()  # set once serving; tests and embedders await it
        self.endpoints: dict[str, str] = {}  # actual bound/connected endpoints (random ports resolved)
        self.counters = Counters()
        self.limiter = RateLimiter(settings.logging.bad_input_interval_s)
        self.notifier = SystemdNotifier({})  # a no-op until serve() reads NOTIFY_SOCKET
        self.thread = HotThread()
        self.monitor = Monitor(self)
        self.pipeline: FramePipeline | None = None
        self.hot: HotPath | None = None
        self.publisher: Publisher | None = None
        self._should_exit = asyncio.Event()
        self._started_monotonic = time.monotonic()
        self._context: zmq.asyncio.Context | None = None
        self._sockets: list[zmq.Socket] = []  # type: ignore[type-arg]  # the hot thread's (frames, actions)
        self._frames: zmq.Socket | None = None  # type: ignore[type-arg]
        self._control: zmq.asyncio.Socket | None = None
        self._mailbox: Mailbox | None = None
        self._decision_log: DecisionLogWriter | None = None
        self._curve: Curve | None = None  # keys are loaded (and checked) at startup
        self._handshakes: HandshakeMonitor | None = None  # with CURVE: refused handshakes counted
        self._metrics: MetricsServer | None = None  # [metrics] enabled: the Prometheus endpoint
        self.outputs: list[LineOutput] = []  # TTL devices (decoder/outputs/), from [outputs.*]
        self._expect_shape: tuple[int, int] = (0, 0)
        self._expect_dtype = np.dtype("uint16")

    # ---- public surface ------------------------------------------------------------------

    async def serve(self, *, install_signal_handlers: bool = True) -> None:
        """Run until shut down. Raises StartupError, or an ExceptionGroup if a task crashed."""
        self._should_exit.clear()
        self.notifier = SystemdNotifier()
        with self._signals(install_signal_handlers):
            try:
                await self.startup()
                if not self._should_exit.is_set():
                    await self.main_loop()
            except BaseExceptionGroup as group:
                log.error("a task crashed; stopping", exc_info=group)
                raise
            finally:
                await self.shutdown()

    def request_shutdown(self) -> None:
        """What SIGTERM does: begin a graceful shutdown."""
        self._should_exit.set()

    @property
    def model(self) -> LoadedModel | None:
        return None if self.pipeline is None else self.pipeline.model

    @property
    def uptime_s(self) -> float:
        return round(time.monotonic() - self._started_monotonic, 3)

    # ---- startup -------------------------------------------------------------------------

    async def startup(self) -> None:
        s = self.settings
        if s.model.bundle is None:
            raise StartupError("no model bundle configured: set model.bundle (or ACTIONLOOP_MODEL__BUNDLE)", 78)
        log.info("starting", bundle=str(s.model.bundle), backend=s.backend.name, mode=s.backend.mode, pid=os.getpid())
        self.notifier.status("loading model")
        load = asyncio.ensure_future(run_in_daemon_thread(self._load_model, s.model.bundle, s.backend, name="load-model"))
        stop = asyncio.ensure_future(self._should_exit.wait())
        await asyncio.wait({load, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not load.done():  # told to stop while loading (a TensorRT build can take minutes)
            load.cancel()
            log.info("startup interrupted by a shutdown request")
            return
        try:
            model = load.result()
        except BundleError as exc:  # the bundle itself is wrong: restarting will not help
            raise StartupError(f"cannot load model bundle {s.model.bundle}: {exc}", 78) from exc
        except Exception as exc:  # backend could not load it (GPU busy, ...): a restart may help
            raise StartupError(f"backend {s.backend.name} cannot run bundle {s.model.bundle}: {exc}") from exc
        min_frames = frames_for_duration(s.policy.min_duration_s, model.bundle.frame_rate_hz)
        self.pipeline = FramePipeline(model, Debouncer(s.policy.min_confidence, min_frames), s.policy.max_gap_frames)
        self._expect_shape = model.frame_shape
        self._expect_dtype = model.frame_dtype
        structlog.contextvars.bind_contextvars(model_id=model.model_id[:12])
        log.info(
            "model ready",
            backend=model.backend_name,
            window=model.window,
            frame_shape=list(model.frame_shape),
            frame_dtype=str(model.frame_dtype),
            classes=len(model.class_names),
            debounce_frames=min_frames,
            load_s=round(model.load_seconds, 3),
        )
        try:
            self._curve = Curve(s.security)
        except SecurityError as exc:
            raise StartupError(f"security settings unusable: {exc}", 78) from exc
        if s.decision_log.enabled:
            try:
                self._decision_log = DecisionLogWriter(s.decision_log.path, s.decision_log.rotate_bytes, s.decision_log.keep)
            except OSError as exc:
                raise StartupError(f"cannot open decision log {s.decision_log.path}: {exc.strerror or exc}", 78) from exc
        try:
            self.outputs = build_outputs(s.outputs, self.counters, model.class_names)
        except OutputConfigError as exc:
            raise StartupError(str(exc), 78) from exc
        for output in self.outputs:
            await output.start()  # a missing device is logged and retried, not fatal
        try:
            self._open_sockets()
        except zmq.ZMQError as exc:
            raise StartupError(f"cannot set up sockets: {exc}") from exc
        assert self._frames is not None and self.publisher is not None and self._mailbox is not None
        self.hot = HotPath(
            self._frames, self.publisher, self.pipeline, self._mailbox, self.counters, self.limiter,
            self._decision_log, self._expect_shape, self._expect_dtype, s.sockets.frames_clock_shared, self.outputs,
        )
        if s.metrics.enabled:
            self._start_metrics()
        self.state = RUNNING
        self._started_monotonic = time.monotonic()
        self.monitor.publish_status()  # before the hot thread starts: the socket is still ours
        # What start-up allocated (model, buffers, sockets) lives as long as the process: collect
        # once now and hide it from the collector, so that no full collection has to walk it
        # (tens of ms) while frames are arriving.
        gc.collect()
        gc.freeze()
        summary = f"decoding {model.model_id[:12]} on {model.backend_name}, frames from {self.endpoints['frames']}"
        self.notifier.ready(summary)
        log.info("ready", **self.endpoints, decision_log=str(s.decision_log.path) if s.decision_log.enabled else None)

    def _open_sockets(self) -> None:
        s = self.settings.sockets
        self._context = zmq.asyncio.Context()
        curve = self._curve
        assert curve is not None
        curve.start(self._context)
        if curve.enabled:
            self._handshakes = HandshakeMonitor(self._context, self.counters, self.limiter)
        # The frame and action sockets belong to the hot-path thread, which drives them
        # synchronously; a sync shadow of the same context gives us those.
        sync_context = zmq.Context.shadow(self._context.underlying)
        pub = sync_context.socket(zmq.PUB)
        self._sockets.append(pub)
        pub.linger = s.linger_ms
        pub.sndhwm = s.actions_sndhwm
        curve.server(pub)
        self._watch_handshakes("actions", pub)
        pub.bind(s.actions)
        self.endpoints["actions"] = pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.publisher = self._publisher(sync_context, pub)

        frames = sync_context.socket(zmq.SUB)
        self._sockets.append(frames)
        frames.linger = 0
        frames.rcvhwm = s.frames_rcvhwm
        # A peer sending absurdly large messages is disconnected by ZeroMQ before they reach us;
        # generous enough that frames of a wrong size still arrive, to be counted and reported.
        frame_bytes = self._expect_shape[0] * self._expect_shape[1] * self._expect_dtype.itemsize
        frames.maxmsgsize = max(MAX_FRAME_BYTES, 16 * frame_bytes)  # every spec-valid frame fits
        frames.setsockopt(zmq.SUBSCRIBE, TOPIC_FRAME)
        if s.frames_mode == "bind":
            curve.server(frames)
            self._watch_handshakes("frames", frames)
            frames.bind(s.frames)
            self.endpoints["frames"] = frames.getsockopt_string(zmq.LAST_ENDPOINT)
        else:
            curve.client(frames)
            if self.settings.security.frames_server_public_key is not None:
                self._watch_handshakes("frames", frames)  # the publisher may refuse us
            frames.connect(s.frames)
            self.endpoints["frames"] = s.frames
        self._frames = frames
        self._mailbox = Mailbox(sync_context)

        control = self._context.socket(zmq.ROUTER)
        control.linger = 0
        curve.server(control)
        self._watch_handshakes("control", control)
        control.bind(s.control)
        self.endpoints["control"] = control.getsockopt_string(zmq.LAST_ENDPOINT)
        self._control = control

    def _start_metrics(self) -> None:
        """Bind the Prometheus endpoint. A port that is taken fails the startup, before any frame
        is decoded: metrics that were asked for and are missing would go unnoticed until needed."""
        from decoder.metrics import MetricsServer  # prometheus-client only when enabled

        m = self.settings.metrics
        self._metrics = MetricsServer(self)
        try:
            self.endpoints["metrics"] = self._metrics.start(m.host, m.port)
        except OSError as exc:
            self._metrics = None
            raise StartupError(
                f"cannot serve metrics on {m.host}:{m.port}: {exc.strerror or exc}; "
                "free the port, or change metrics.port (or set metrics.enabled = false)"
            ) from exc
    def _publisher(self, context: zmq.Context, pub: zmq.Socket) -> Publisher:  # type: ignore[type-arg]
        """The plain publisher, or with ``sockets.json_mirror`` one that also sends JSON on a
        second PUB socket, set up like the first (same high-water mark, linger and CURVE)."""
        s = self.settings.sockets
        if s.json_mirror is None:
            return Publisher(pub, self._decision_log, self.counters)
        mirror = context.socket(zmq.PUB)
        self._sockets.append(mirror)
        mirror.linger = s.linger_ms
        mirror.sndhwm = s.actions_sndhwm
        assert self._curve is not None
        self._curve.server(mirror)
        self._watch_handshakes("json_mirror", mirror)
        mirror.bind(s.json_mirror)
        self.endpoints["json_mirror"] = mirror.getsockopt_string(zmq.LAST_ENDPOINT)
        return MirroredPublisher(pub, self._decision_log, self.counters, mirror)

    def _watch_handshakes(self, name: str, sock: zmq.Socket) -> None:  # type: ignore[type-arg]
        if self._handshakes is not None:
            self._handshakes.watch(name, sock)

    # ---- run -----------------------------------------------------------------------------

    async def main_loop(self) -> None:
        assert self.hot is not None and self._mailbox is not None and self._control is not None
        control = ControlServer(self._control, self, self.counters, self.limiter, self.settings.control)
        done = self.thread.start(self.hot, self._mailbox)
        self.ready.set()
        async with asyncio.TaskGroup() as tasks:
            hot = tasks.create_task(self._hot_thread(done), name="hot-path")
            background = [
                tasks.create_task(self.monitor.heartbeat(), name="heartbeat"),
                tasks.create_task(self.monitor.health(), name="health"),
                tasks.create_task(self.monitor.summary(), name="summary"),
                tasks.create_task(control.serve(tasks), name="control"),
            ]
            if self._handshakes is not None:
                background.append(tasks.create_task(self._handshakes.run(), name="handshake-monitor"))
            if self._metrics is not None:
                background.append(tasks.create_task(self._metrics.harvest(), name="metrics"))
            for output in self.outputs:
                background.append(tasks.create_task(output.maintain(self.thread), name="outputs"))
            tasks.create_task(self._supervise(hot, background), name="supervise")

    async def _hot_thread(self, done: asyncio.Future[None]) -> None:
        """Lives as long as the hot-path thread; its exception is the service's."""
        await done

    async def _supervise(self, hot: asyncio.Task[None], background: list[asyncio.Task[None]]) -> None:
        """Wait for the shutdown request, then wind the run phase down in order."""
        await self._should_exit.wait()
        self.state = STOPPING
        self.notifier.stopping("stopping: finishing the frame in flight")
        log.info("stopping", reason="shutdown requested")
        self.thread.stop()  # stop intake: the thread returns after the frame it is deciding
        timeout = self.settings.policy.shutdown_timeout_s
        done, _ = await asyncio.wait({hot}, timeout=timeout)
        if not done:
            log.error("frame in flight did not finish in time; abandoning it", timeout_s=timeout)
            hot.cancel()
        for task in background:
            task.cancel()
        # Reloads still loading are abandoned too.
        for task in asyncio.all_tasks():
            if task.get_name() == "control-reload" and not task.done():
                task.cancel()

    # ---- control -------------------------------------------------------------------------

    def status_report(self) -> dict[str, Any]:
        assert self.pipeline is not None
        model = self.pipeline.model
        return {
            "state": self.state,
            "uptime_s": self.uptime_s,
            "model_id": model.model_id,
            "bundle": str(model.bundle.path),
            "backend": model.backend_name,
            "backend_choice": model.backend_choice,
            "mode": model.mode,
            "window": model.window,
            "window_fill": self.pipeline.window_fill,
            "frame_shape": list(model.frame_shape),
            "frame_dtype": str(model.frame_dtype),
            "class_names": list(model.class_names),
            "counters": self.counters.as_dict(),
            "latency_us": self.monitor.latency_summary(),
            "frames_clock": "shared" if self.settings.sockets.frames_clock_shared else "separate",
            "curve": self.settings.security.curve,
            "endpoints": dict(self.endpoints),
            "inference_stalled_s": round(self.thread.stalled_for_s(), 3),
            "decision_log": self._decision_log_report(),
            "online_centring": self._online_centring_report(model),
            "outputs": {output.name: output.report() for output in self.outputs},
            "pid": os.getpid(),
        }

    @staticmethod
    def _online_centring_report(model: LoadedModel) -> dict[str, Any]:
        # read from the event loop while the hot thread updates it: a snapshot, approximate at worst
        state = getattr(model.decoder, "state", None)
        return {"enabled": True, **state()} if state is not None else {"enabled": False}

    def _decision_log_report(self) -> dict[str, Any]:
        writer = self._decision_log
        if writer is None:
            return {"enabled": False}
        return {
            "enabled": True,
            "path": str(writer.path),
            "records_written": writer.records_written,
            "records_dropped": writer.records_dropped,
            "write_errors": writer.write_errors,
        }

    async def pause(self) -> None:
        if self.state == STOPPING:
            raise ControlRefused("the daemon is stopping")
        if self.state == PAUSED:
            return
        assert self.hot is not None
        await self._on_hot_thread(self.hot.pause)  # from the next frame on, frames count as paused
        self.state = PAUSED
        log.info("paused; window reset")
        self.notifier.status("paused")

    async def resume(self) -> None:
        if self.state == STOPPING:
            raise ControlRefused("the daemon is stopping")
        if self.state != PAUSED:
            return
        assert self.hot is not None
        await self._on_hot_thread(self.hot.resume)
        self.state = RUNNING
        log.info("resumed")
        self.notifier.status("running")

    async def _on_hot_thread(self, fn: Any, *args: Any) -> Any:
        """Run a control action on the hot thread, between two frames, with a bound."""
        try:
            return await asyncio.wait_for(self.thread.submit(fn, *args), self.settings.policy.stall_timeout_s)
        except TimeoutError:
            raise ControlRefused("the inference thread did not respond in time") from None

    async def reload(self, bundle: Path) -> dict[str, Any]:
        """Load + warm up a new bundle off the loop, then swap it in between two frames.
        A bundle that fails to load, or expects other frames, is refused; the old model runs on."""
        assert self.hot is not None
        if self.state == STOPPING:
            raise ControlRefused("the daemon is stopping")
        log.info("reload requested", bundle=str(bundle))
        try:
            bundle = check_reload_allowed(bundle, self.settings.model.reload_allowed_dirs)
        except ReloadNotAllowed as exc:
            self.counters.reloads_refused += 1
            log.warning("reload refused: bundle outside the allowed directories", bundle=str(bundle), error=str(exc))
            raise ControlRefused(str(exc)) from None
        try:
            new = await run_in_daemon_thread(self._load_model, bundle, self.settings.backend, name="reload-model")
        except Exception as exc:
            self.counters.reloads_refused += 1
            log.warning("reload refused: bundle does not load", bundle=str(bundle), error=str(exc))
            raise ControlRefused(f"bundle {bundle} refused, the current model keeps running: {exc}") from None
        if new.frame_shape != self._expect_shape or new.frame_dtype != self._expect_dtype:
            new.close()
            self.counters.reloads_refused += 1
            message = (
                f"bundle {bundle} expects {new.frame_dtype} {list(new.frame_shape)} frames but this daemon receives "
                f"{self._expect_dtype} {list(self._expect_shape)}; restart the daemon to change the frame format"
            )
            log.warning("reload refused: frame format differs", bundle=str(bundle))
            raise ControlRefused(message)
        try:
            old = await asyncio.wait_for(self.thread.submit(self.hot.swap, new), self.settings.policy.stall_timeout_s)
        except TimeoutError:
            # The swap is still queued on the thread and will happen; say so rather than lie.
            raise ControlRefused("the inference thread is busy; the new model will be swapped in when it frees") from None
        self.counters.reloads += 1
        await asyncio.to_thread(old.close)
        structlog.contextvars.bind_contextvars(model_id=new.model_id[:12])
        self.notifier.status(f"decoding {new.model_id[:12]} on {new.backend_name} (reloaded)")  # not the old model's
        log.info("model swapped", old=old.model_id[:12], new=new.model_id[:12], backend=new.backend_name, load_s=round(new.load_seconds, 3))
        self.monitor.publish_status()
        return self.status_report()

    # ---- shutdown ------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Close everything the startup opened, in order, each step bounded. Safe to call twice."""
        self.state = STOPPING
        self.thread.stop()
        stopped = self.thread.join(timeout=0.5)
        if not stopped:
            log.error("hot-path thread still busy at exit", running=self.thread.running_call)
        elif self.publisher is not None and self.pipeline is not None:
            with contextlib.suppress(Exception):
                self.monitor.publish_status()  # subscribers see a clean "stopping"
        linger = self.settings.sockets.linger_ms
        if self._control is not None:
            self._control.close(linger=0)
            self._control = None
        if stopped:  # the hot thread's sockets are ours again; a stuck thread keeps them to the end
            if self._mailbox is not None:
                self._mailbox.close()
                self._mailbox = None
            for sock in self._sockets:
                sock.close(linger=linger)
            self._sockets.clear()
        if self._handshakes is not None:
            self._handshakes.close()
            self._handshakes = None
        if self._curve is not None:
            self._curve.stop()
        if self._context is not None and stopped:
            # Sockets are closed with a bounded linger, so term() returns within it.
            await asyncio.to_thread(self._context.term)
            self._context = None
        for output in self.outputs:
            await output.stop(stopped)  # lines low, device closed
        if self.pipeline is not None and stopped:
            with contextlib.suppress(Exception):
                self.pipeline.model.close()
        if self._metrics is not None:
            await self._metrics.close()
            self._metrics = None
        if self._decision_log is not None:
            self._decision_log.close()
            self._decision_log = None
        self.notifier.stopping("stopped")
        self.notifier.close()
        if self.ready.is_set():
            log.info("stopped", **self.counters.as_dict(), **self.monitor.latency_summary())
        else:
            log.info("stopped before ready")

    # ---- signals -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _signals(self, install: bool):  # type: ignore[no-untyped-def]
        if not install:
            yield
            return
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._should_exit.is_set():
            log.warning("second signal: exiting now", signal=sig.name)
            if self._decision_log is not None:
                self._decision_log.close()
            self.notifier.stopping("forced exit")
            os._exit(1)
        log.info("signal received; shutting down", signal=sig.name)
        self._should_exit.set()
