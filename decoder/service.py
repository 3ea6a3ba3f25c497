"""The decoder service: startup -> run -> shutdown, shaped like uvicorn's ``Server``.

- startup: load and verify the bundle, create and warm up the backend (off the loop), bind and
  connect the sockets, then announce ready (log line, status message, systemd READY=1).
- run: long-lived tasks in one ``asyncio.TaskGroup``:
  receive (SUB) -> latest-frame slot -> infer (the dedicated inference thread) -> publish (PUB +
  decision log), plus heartbeat, health/watchdog, periodic summary and the control socket.
  A task that crashes cancels the others and ``serve()`` raises: the process exits non-zero.
- shutdown (first SIGTERM/SIGINT, or ``request_shutdown()``): stop intake, decode the frames
  already accepted (at most the one in flight and the one waiting), publish a final status,
  close the sockets with a bounded linger, flush the decision log, STOPPING=1. A second signal
  exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import zmq
import zmq.asyncio

from decoder.control import ControlRefused, ControlServer
from decoder.debounce import Debouncer, Transition, frames_for_duration
from decoder.decision_log import DecisionLogWriter
from decoder.model import LoadedModel, ModelLoader, load_model
from decoder.pipeline import DECODING, Decision, FramePipeline
from decoder.publisher import Publisher
from decoder.security import Curve, SecurityError
from decoder.settings import DecoderSettings
from decoder.stats import Counters, LatencyWindow, RateLimiter
from decoder.systemd import SystemdNotifier
from decoder.worker import InferenceThread, LatestSlot, run_in_daemon_thread
from protocols.bundle import BundleError
from protocols.codec import decode_frame
from protocols.errors import ProtocolError
from protocols.messages import TOPIC_FRAME, Action, Event, FrameHeader, Status

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


@dataclass(slots=True)
class _Pending:
    """A validated frame waiting in the slot. Holds the ZeroMQ buffer its pixels view."""

    header: FrameHeader
    pixels: np.ndarray
    t_recv_ns: int
    t_submit_ns: int = 0


class DecoderService:
    """The daemon. The constructor only stores its settings; ``serve()`` does the rest."""

    def __init__(self, settings: DecoderSettings, *, model_loader: ModelLoader = load_model) -> None:
        self.settings = settings
        self._load_model = model_loader
        self.state = STARTING
        self.ready = asyncio.Event()  # set once serving; tests and embedders await it
        self.endpoints: dict[str, str] = {}  # actual bound/connected endpoints (random ports resolved)
        self.counters = Counters()
        self.latency = LatencyWindow()  # receive -> publish, the daemon's own share
        self.inference_latency = LatencyWindow()  # submit to the thread -> result back
        self._should_exit = asyncio.Event()
        self._started_monotonic = time.monotonic()
        self._context: zmq.asyncio.Context | None = None
        self._sockets: list[zmq.Socket] = []  # type: ignore[type-arg]
        self._frames: zmq.asyncio.Socket | None = None
        self._control: zmq.asyncio.Socket | None = None
        self._publisher: Publisher | None = None
        self._decision_log: DecisionLogWriter | None = None
        self._curve: Curve | None = None  # keys are loaded (and checked) at startup
        self._notifier = SystemdNotifier({})  # a no-op until serve() reads NOTIFY_SOCKET
        self._thread = InferenceThread()
        self._pipeline: FramePipeline | None = None
        self._slot: LatestSlot[_Pending] | None = None  # the newest frame waiting for the model
        self._inflight: tuple[_Pending, asyncio.Future[Decision]] | None = None  # the one in the model
        self._work = asyncio.Event()  # wakes the infer task: a frame went in, or intake closed
        self._limiter = RateLimiter(settings.logging.bad_input_interval_s)
        self._last_rx_seq: int | None = None
        self._dropped_since_action = 0
        self._skipped_since_action = 0
        self._expect_shape: tuple[int, int] = (0, 0)
        self._expect_dtype = np.dtype("uint16")
        self._stall_reported = False

    # ---- public surface ------------------------------------------------------------------

    async def serve(self, *, install_signal_handlers: bool = True) -> None:
        """Run until shut down. Raises StartupError, or an ExceptionGroup if a task crashed."""
        self._should_exit.clear()
        self._notifier = SystemdNotifier()
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
        return None if self._pipeline is None else self._pipeline.model

    # ---- startup -------------------------------------------------------------------------

    async def startup(self) -> None:
        s = self.settings
        if s.model.bundle is None:
            raise StartupError("no model bundle configured: set model.bundle (or ACTIONLOOP_MODEL__BUNDLE)", 78)
        log.info("starting", bundle=str(s.model.bundle), backend=s.backend.name, mode=s.backend.mode, pid=os.getpid())
        self._notifier.status("loading model")
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
        self._pipeline = FramePipeline(
            model, Debouncer(s.policy.min_confidence, min_frames), s.policy.max_gap_frames
        )
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
            self._open_sockets()
        except zmq.ZMQError as exc:
            raise StartupError(f"cannot set up sockets: {exc}") from exc
        self._thread.start()
        self._slot = LatestSlot()
        self.state = RUNNING
        self._started_monotonic = time.monotonic()
        self._publish_status()
        # What start-up allocated (model, buffers, sockets) lives as long as the process: collect
        # once now and hide it from the collector, so that no full collection has to walk it
        # (tens of ms) while frames are arriving.
        gc.collect()
        gc.freeze()
        summary = f"decoding {model.model_id[:12]} on {model.backend_name}, frames from {self.endpoints['frames']}"
        self._notifier.ready(summary)
        log.info("ready", **self.endpoints, decision_log=str(s.decision_log.path) if s.decision_log.enabled else None)
        self.ready.set()

    def _open_sockets(self) -> None:
        s = self.settings.sockets
        self._context = zmq.asyncio.Context()
        curve = self._curve
        assert curve is not None
        curve.start(self._context)
        # The PUB socket is driven synchronously (never blocks) so a send and its decision-log
        # record happen in one step; a sync shadow of the same context gives us that.
        sync_context = zmq.Context.shadow(self._context.underlying)
        pub = sync_context.socket(zmq.PUB)
        self._sockets.append(pub)
        pub.linger = s.linger_ms
        pub.sndhwm = s.actions_sndhwm
        curve.server(pub)
        pub.bind(s.actions)
        self.endpoints["actions"] = pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._publisher = Publisher(pub, self._decision_log, self.counters)

        frames = self._context.socket(zmq.SUB)
        self._sockets.append(frames)
        frames.linger = 0
        frames.rcvhwm = s.frames_rcvhwm
        # A peer sending absurdly large messages is disconnected by ZeroMQ before they reach us;
        # generous enough that frames of a wrong size still arrive, to be counted and reported.
        frame_bytes = self._expect_shape[0] * self._expect_shape[1] * self._expect_dtype.itemsize
        frames.maxmsgsize = max(64 * 1024 * 1024, 16 * frame_bytes)
        frames.setsockopt(zmq.SUBSCRIBE, TOPIC_FRAME)
        if s.frames_mode == "bind":
            curve.server(frames)
            frames.bind(s.frames)
            self.endpoints["frames"] = frames.getsockopt_string(zmq.LAST_ENDPOINT)
        else:
            curve.client(frames)
            frames.connect(s.frames)
            self.endpoints["frames"] = s.frames
        self._frames = frames

        control = self._context.socket(zmq.ROUTER)
        self._sockets.append(control)
        control.linger = 0
        curve.server(control)
        control.bind(s.control)
        self.endpoints["control"] = control.getsockopt_string(zmq.LAST_ENDPOINT)
        self._control = control

    # ---- run -----------------------------------------------------------------------------

    async def main_loop(self) -> None:
        assert self._frames is not None and self._control is not None
        control = ControlServer(self._control, self, self.counters, self._limiter)
        async with asyncio.TaskGroup() as tasks:
            receive = tasks.create_task(self._receive(), name="receive")
            infer = tasks.create_task(self._infer(), name="infer")
            background = [
                tasks.create_task(self._heartbeat(), name="heartbeat"),
                tasks.create_task(self._health(), name="health"),
                tasks.create_task(self._summary(), name="summary"),
                tasks.create_task(control.serve(tasks), name="control"),
            ]
            tasks.create_task(self._supervise(receive, infer, background, tasks), name="supervise")

    async def _supervise(
        self,
        receive: asyncio.Task[None],
        infer: asyncio.Task[None],
        background: list[asyncio.Task[None]],
        tasks: asyncio.TaskGroup,
    ) -> None:
        """Wait for the shutdown request, then wind the run phase down in order."""
        await self._should_exit.wait()
        self.state = STOPPING
        self._notifier.stopping("stopping: finishing the frame in flight")
        log.info("stopping", reason="shutdown requested")
        receive.cancel()  # stop intake
        assert self._slot is not None
        self._slot.close()
        self._work.set()  # the infer task finishes what was accepted, then returns
        timeout = self.settings.policy.shutdown_timeout_s
        done, _ = await asyncio.wait({infer}, timeout=timeout)
        if not done:
            log.error("frame in flight did not finish in time; abandoning it", timeout_s=timeout)
            infer.cancel()
        for task in background:
            task.cancel()
        # Reloads still loading are abandoned too.
        for task in asyncio.all_tasks():
            if task.get_name() == "control-reload" and not task.done():
                task.cancel()

    async def _receive(self) -> None:
        assert self._frames is not None
        frames = self._frames
        while True:
            parts = await frames.recv_multipart(copy=False)
            self._accept(parts, time.monotonic_ns())

    def _accept(self, parts: list[zmq.Frame], t_recv_ns: int) -> None:
        """Validate one frame message and put it in the slot. Never raises on bad input."""
        c = self.counters
        try:
            header, pixels = decode_frame(parts)
        except ProtocolError as exc:
            c.malformed_messages += 1
            self._warn("malformed", "malformed frame message dropped", reason=exc.reason)
            return
        except Exception as exc:  # a reader must never die of its input, even through a codec bug
            c.malformed_messages += 1
            self._warn("malformed-bug", "frame decoding raised unexpectedly; dropped", level="error",
                       error=f"{type(exc).__name__}: {exc}")
            return
        seq = header.seq
        last = self._last_rx_seq
        if last is not None:
            if seq > last + 1:
                c.frames_lost += seq - last - 1
                self._dropped_since_action += seq - last - 1
            elif seq <= last:
                c.sequence_restarts += 1
                self._warn("restart", "frame sequence went backwards: publisher restarted", seq=seq, previous=last)
        self._last_rx_seq = seq
        if self.state == PAUSED:
            c.frames_paused += 1
            return
        if pixels.shape != self._expect_shape or pixels.dtype != self._expect_dtype:
            c.wrong_shape_frames += 1
            self._warn(
                "shape",
                "frame does not match the model; dropped",
                got=f"{header.dtype} {list(pixels.shape)}",
                expected=f"{self._expect_dtype} {list(self._expect_shape)}",
            )
            return
        # float64 accumulation cannot overflow for finite float32 input, so a non-finite sum
        # means a NaN or inf pixel; no temporary array per frame.
        if pixels.dtype.kind == "f" and not math.isfinite(pixels.sum(dtype=np.float64)):
            c.non_finite_frames += 1
            self._warn("nan", "frame holds NaN or inf; dropped", seq=seq)
            return
        c.frames_received += 1
        pending = _Pending(header, pixels, t_recv_ns)
        if self._inflight is None:
            self._dispatch(pending)  # the model is idle: start now, straight from the receive path
            return
        assert self._slot is not None
        if self._slot.put(pending) is not None:
            c.frames_skipped += 1
            self._skipped_since_action += 1

    def _dispatch(self, pending: _Pending) -> None:
        """Hand a frame to the inference thread; the infer task publishes the result."""
        assert self._pipeline is not None
        header = pending.header
        pending.t_submit_ns = time.monotonic_ns()
        future = self._thread.submit(self._pipeline.process, header.seq, header.t_acq_ns, pending.pixels)
        self._inflight = (pending, future)
        self._work.set()

    async def _infer(self) -> None:
        """Publish each decision, then start the frame waiting in the slot (the newest) if any."""
        assert self._slot is not None
        slot = self._slot
        while True:
            if self._inflight is None:
                if slot.closed:
                    return  # intake stopped and everything accepted is published: shutdown
                self._work.clear()
                await self._work.wait()
                continue
            pending, future = self._inflight
            decision = await future
            self._inflight = None
            self.inference_latency.record(decision.t_done_ns - pending.t_submit_ns)
            self._publish_decision(pending, decision)
            waiting = slot.take()
            if waiting is None:
                continue
            if self.state == PAUSED:
                self.counters.frames_paused += 1  # accepted just before the pause
            else:
                self._dispatch(waiting)

    def _publish_decision(self, pending: _Pending, decision: Decision) -> None:
        assert self._publisher is not None
        self.counters.frames_decoded += 1
        header = pending.header
        decoding = decision.state == DECODING
        t_pub = time.monotonic_ns()
        action = Action(
            seq=header.seq,
            t_acq_ns=header.t_acq_ns,
            t_recv_ns=pending.t_recv_ns,
            t_done_ns=decision.t_done_ns,
            t_pub_ns=t_pub,
            state=decision.state,
            action=decision.class_names[decision.index] if decoding else "",
            index=decision.index,
            probs=decision.probabilities,
            confidence=decision.confidence,
            model_id=decision.model_id,
            dropped=self._dropped_since_action,
            skipped=self._skipped_since_action,
            session=header.session,
        )
        self._dropped_since_action = 0
        self._skipped_since_action = 0
        self._publisher.publish(action)
        self.latency.record(t_pub - pending.t_recv_ns)
        if decision.transitions:
            self._publish_events(decision.transitions, decision.class_names, decision.model_id, header.session)
        if decision.reset_reason is not None:
            self.counters.window_resets += 1
            self._warn("reset", "window reset", reason=decision.reset_reason, seq=header.seq, level="info")

    def _publish_events(
        self, transitions: list[Transition], class_names: tuple[str, ...], model_id: str, session: str = ""
    ) -> None:
        assert self._publisher is not None
        for t in transitions:
            self._publisher.publish(
                Event(
                    kind=t.kind,
                    action=class_names[t.class_index],
                    index=t.class_index,
                    seq=t.sequence,
                    t_acq_ns=t.t_ns,
                    t_pub_ns=time.monotonic_ns(),
                    confidence=min(1.0, max(0.0, t.confidence)),
                    model_id=model_id,
                    duration_ns=t.duration_ns,
                    session=session,
                )
            )

    async def _heartbeat(self) -> None:
        interval = self.settings.policy.heartbeat_interval_s
        while True:
            await asyncio.sleep(interval)
            self._publish_status()

    def _publish_status(self) -> None:
        assert self._publisher is not None and self._pipeline is not None
        model = self._pipeline.model
        self._publisher.publish(
            Status(
                t_ns=time.monotonic_ns(),
                state=self.state,
                uptime_s=self.uptime_s,
                model_id=model.model_id,
                backend=model.backend_name,
                window=model.window,
                window_fill=self._pipeline.window_fill,
                counters=self.counters.as_dict(),
                latency_us=self._latency_summary(),
            )
        )

    async def _health(self) -> None:
        """Watchdog pings from the loop (every WATCHDOG_USEC / 2), only while the loop and the
        inference thread are healthy; the thread is checked at least twice per stall timeout."""
        watchdog = self._notifier.watchdog_interval_s
        stall_timeout = self.settings.policy.stall_timeout_s
        interval = min(watchdog or 1.0, stall_timeout / 2, 1.0)
        last_ping = -math.inf
        while True:
            stalled = self._thread.stalled_for_s()
            healthy = self._thread.alive and stalled < stall_timeout
            if healthy:
                if self._stall_reported:
                    log.warning("inference thread recovered")
                    self._stall_reported = False
                now = time.monotonic()
                # the small margin keeps sleep jitter from stretching a ping to a whole check late
                if watchdog is not None and now - last_ping >= watchdog - interval / 4:
                    self._notifier.watchdog()
                    last_ping = now
            elif not self._stall_reported:
                self._stall_reported = True
                log.error(
                    "inference thread stuck; withholding watchdog pings",
                    running=self._thread.running_call,
                    stalled_s=round(stalled, 3),
                    alive=self._thread.alive,
                )
                self._notifier.status(f"inference stuck for {stalled:.1f} s")
            await asyncio.sleep(interval)

    async def _summary(self) -> None:
        interval = self.settings.logging.summary_interval_s
        previous = self.counters.as_dict()
        while True:
            await asyncio.sleep(interval)
            now = self.counters.as_dict()
            delta = {k: now[k] - previous[k] for k in ("frames_received", "frames_decoded", "frames_skipped", "frames_lost")}
            bad = sum(now[k] - previous[k] for k in ("malformed_messages", "wrong_shape_frames", "non_finite_frames"))
            previous = now
            latency = self._latency_summary()
            log.info("summary", interval_s=interval, state=self.state, bad_input=bad, **delta, **latency)
            self._notifier.status(
                f"{self.state}: {now['frames_decoded']} frames decoded, {now['frames_skipped']} skipped, "
                f"{now['frames_lost']} lost; p99 {latency.get('p99_us', 0.0):.0f} us"
            )

    def _latency_summary(self) -> dict[str, float]:
        summary = self.latency.percentiles_us()
        infer = self.inference_latency.percentiles_us()
        if infer:
            summary["infer_p50_us"] = infer["p50_us"]
            summary["infer_p99_us"] = infer["p99_us"]
        return summary

    def _warn(self, key: str, message: str, level: str = "warning", **fields: Any) -> None:
        """Rate-limited log line for per-frame conditions: at most one per key per interval."""
        held_back = self._limiter.allow(key)
        if held_back is None:
            return
        getattr(log, level)(message, similar_since_last=held_back, **fields)

    # ---- control -------------------------------------------------------------------------

    @property
    def uptime_s(self) -> float:
        return round(time.monotonic() - self._started_monotonic, 3)

    def status_report(self) -> dict[str, Any]:
        assert self._pipeline is not None
        model = self._pipeline.model
        return {
            "state": self.state,
            "uptime_s": self.uptime_s,
            "model_id": model.model_id,
            "bundle": str(model.bundle.path),
            "backend": model.backend_name,
            "mode": model.mode,
            "window": model.window,
            "window_fill": self._pipeline.window_fill,
            "frame_shape": list(model.frame_shape),
            "frame_dtype": str(model.frame_dtype),
            "class_names": list(model.class_names),
            "counters": self.counters.as_dict(),
            "latency_us": self._latency_summary(),
            "endpoints": dict(self.endpoints),
            "inference_stalled_s": round(self._thread.stalled_for_s(), 3),
            "decision_log": self._decision_log_report(),
            "pid": os.getpid(),
        }

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
        self.state = PAUSED
        await self._reset_pipeline("paused")
        log.info("paused")
        self._notifier.status("paused")

    async def resume(self) -> None:
        if self.state == STOPPING:
            raise ControlRefused("the daemon is stopping")
        if self.state != PAUSED:
            return
        self.state = RUNNING
        log.info("resumed")
        self._notifier.status("running")

    async def _reset_pipeline(self, reason: str) -> None:
        assert self._pipeline is not None
        pipeline = self._pipeline

        def reset() -> tuple[list[Transition], tuple[str, ...], str]:
            return pipeline.reset(), pipeline.model.class_names, pipeline.model.model_id

        transitions, names, model_id = await self._on_thread(reset)
        self.counters.window_resets += 1
        self._publish_events(transitions, names, model_id)
        log.info("window reset", reason=reason)

    async def _on_thread(self, fn: Any) -> Any:
        """Run a control action on the inference thread, between two frames, with a bound."""
        try:
            return await asyncio.wait_for(self._thread.submit(fn), self.settings.policy.stall_timeout_s)
        except TimeoutError:
            raise ControlRefused("the inference thread did not respond in time") from None

    async def reload(self, bundle: Path) -> dict[str, Any]:
        """Load + warm up a new bundle off the loop, then swap it in between two frames.
        A bundle that fails to load, or expects other frames, is refused; the old model runs on."""
        assert self._pipeline is not None
        if self.state == STOPPING:
            raise ControlRefused("the daemon is stopping")
        log.info("reload requested", bundle=str(bundle))
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
        pipeline = self._pipeline
        try:
            old, transitions = await asyncio.wait_for(
                self._thread.submit(pipeline.swap, new), self.settings.policy.stall_timeout_s
            )
        except TimeoutError:
            # The swap is still queued on the thread and will happen; say so rather than lie.
            raise ControlRefused("the inference thread is busy; the new model will be swapped in when it frees") from None
        self._publish_events(transitions, old.class_names, old.model_id)
        self.counters.reloads += 1
        self.counters.window_resets += 1
        await asyncio.to_thread(old.close)
        structlog.contextvars.bind_contextvars(model_id=new.model_id[:12])
        log.info("model swapped", old=old.model_id[:12], new=new.model_id[:12], backend=new.backend_name, load_s=round(new.load_seconds, 3))
        self._publish_status()
        return self.status_report()

    # ---- shutdown ------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Close everything the startup opened, in order, each step bounded. Safe to call twice."""
        self.state = STOPPING
        if self._publisher is not None and self._pipeline is not None:
            with contextlib.suppress(Exception):
                self._publish_status()  # subscribers see a clean "stopping"
        linger = self.settings.sockets.linger_ms
        for sock in self._sockets:
            sock.close(linger=linger)
        self._sockets.clear()
        if self._curve is not None:
            self._curve.stop()
        if self._context is not None:
            # Sockets are closed with a bounded linger, so term() returns within it.
            await asyncio.to_thread(self._context.term)
            self._context = None
        if not self._thread.stop(timeout=0.5):
            log.error("inference thread still busy at exit", running=self._thread.running_call)
        if self._pipeline is not None and not self._thread.alive:
            with contextlib.suppress(Exception):
                self._pipeline.model.close()
        if self._decision_log is not None:
            self._decision_log.close()
            self._decision_log = None
        self._notifier.stopping("stopped")
        self._notifier.close()
        if self.ready.is_set():
            log.info("stopped", **self.counters.as_dict(), **self._latency_summary())
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
            self._notifier.stopping("forced exit")
            os._exit(1)
        log.info("signal received; shutting down", signal=sig.name)
        self._should_exit.set()
