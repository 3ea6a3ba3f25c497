"""The frame's route, socket to socket, on one thread.

One dedicated thread owns the frame SUB socket, the model (through the pipeline) and the
action PUB socket. Per frame, with no hop to another thread or to the event loop:

1. wait: ``poll`` on the frame socket and the mailbox (ZeroMQ releases the GIL while it waits);
2. receive: the oldest frame waiting, NOBLOCK, validated (shape, dtype, finite values,
   sequence gaps counted): it found the thread idle, so it is decoded;
3. decode: the streaming pipeline (encode the frame once, temporal head, debounce);
4. publish: the action and any onset/offset events on the PUB socket; their decision-log
   records are queued; each event also goes to the TTL outputs (one non-blocking write);
5. run what the event loop handed over meanwhile (a status heartbeat to publish, a model swap,
   pause/resume), between two frames, at most ``MAX_CALLS_PER_TURN`` of them (frames first);
6. latest wins: take every frame that arrived during the decision, NOBLOCK; the newest valid
   one is decoded next (back to 3), the others are counted as skipped;
7. when no frame comes for a millisecond (or the oldest record is 2 ms old), write the queued
   decision-log records with one ``write`` (no wait on a lock, no other thread woken).

Everything that is not per frame (control, heartbeat, watchdog, summaries, reload) runs on the
event loop and talks to this thread only through ``Mailbox`` and plain attributes (counters,
``busy_since_ns``) that it reads without locks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import structlog
import zmq

from decoder.debounce import Transition
from decoder.decision_log import DecisionLogWriter
from decoder.outputs.lines import LineOutput
from decoder.pipeline import DECODING, FramePipeline
from decoder.publisher import Publisher
from decoder.stats import Counters, LatencyWindow, RateLimiter
from decoder.worker import Mailbox
from protocols.codec import decode_frame
from protocols.errors import ProtocolError
from protocols.messages import Action, Event, FrameHeader, saturating_add, sequence_step

log = structlog.get_logger(__name__)

# Frames read in one drain at most; ZeroMQ holds at most `frames_rcvhwm` anyway.
MAX_DRAIN = 4096
# Decision-log records reach the file once no frame came for this long after them, or at the
# latest once the oldest waiting record is this old (frames arriving back to back).
LOG_IDLE_MS = 1
LOG_MAX_AGE_NS = 2_000_000
# Frames first: mailbox calls (heartbeats, pause/resume, swaps) run between two frames, at most
# this many per turn; the rest wait for the next turn, after the frames that arrived meanwhile.
MAX_CALLS_PER_TURN = 4


class HotPath:
    """Receive -> validate -> decode -> debounce -> publish, on the thread that calls ``run``."""

    def __init__(
        self,
        frames: zmq.Socket,  # type: ignore[type-arg]
        publisher: Publisher,
        pipeline: FramePipeline,
        mailbox: Mailbox,
        counters: Counters,
        limiter: RateLimiter,
        decision_log: DecisionLogWriter | None,
        expect_shape: tuple[int, int],
        expect_dtype: np.dtype,
        clock_shared: bool = False,
        outputs: Sequence[LineOutput] = (),
    ) -> None:
        self.frames = frames
        self.publisher = publisher
        self.pipeline = pipeline
        self.mailbox = mailbox
        self.counters = counters
        self.limiter = limiter
        self.decision_log = decision_log
        self.outputs = tuple(outputs)  # TTL devices, written right after each event is published
        self.expect_shape = expect_shape
        self.expect_dtype = expect_dtype
        self.latency = LatencyWindow()  # receive -> publish, the daemon's own share
        self.inference_latency = LatencyWindow()  # the pipeline alone (encode, head, debounce)
        # The frame's t_pub_ns -> its action published: includes the time it waited in the socket
        # queue, which the daemon's own latency cannot see. Only when the publisher stamps with
        # this host's clock.
        self.age: LatencyWindow | None = LatencyWindow() if clock_shared else None
        self.paused = False  # set and cleared by mailbox calls, so between two frames
        self.busy_since_ns = 0  # monotonic start of the model call running now; 0 while idle
        self.running_call = ""
        self.stopped = False
        self._last_rx_seq: int | None = None
        self._dropped_since_action = 0
        self._skipped_since_action = 0

    # ---- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        """Until the mailbox says stop. An exception ends the thread and, through its future,
        the service."""
        poller = zmq.Poller()
        poller.register(self.frames, zmq.POLLIN)
        poller.register(self.mailbox.receiver, zmq.POLLIN)
        decision_log = self.decision_log
        mailbox = self.mailbox
        clock = time.monotonic_ns
        while not self.stopped:
            # Wait with the GIL released. Records waiting for the decision log are written once
            # no frame has come for LOG_IDLE_MS, so the write never sits between a send and the
            # I/O thread that puts the action on the wire.
            idle_write = decision_log is not None and decision_log.has_pending
            # Calls left by a bounded turn: look at the sockets without waiting, then run more.
            calls_left = mailbox.pending
            if not poller.poll(0 if calls_left else LOG_IDLE_MS if idle_write else None) and not calls_left:
                decision_log.write_pending()  # type: ignore[union-attr]
                continue
            frame = self._take_first()
            while frame is not None:  # decide, then whatever arrived meanwhile: newest wins
                self._decide(*frame)
                mailbox.run_pending(self.call, self._is_stopped, MAX_CALLS_PER_TURN)
                if self.stopped:
                    break
                if decision_log is not None and clock() - decision_log.pending_since_ns > LOG_MAX_AGE_NS:
                    decision_log.write_pending()  # frames keep coming: do not wait for a gap
                frame = self._take_newest()
            mailbox.run_pending(self.call, self._is_stopped, MAX_CALLS_PER_TURN)
        if decision_log is not None:
            decision_log.write_pending()

    def _take_first(self) -> tuple[FrameHeader, np.ndarray, int] | None:
        """The oldest valid frame waiting (it found the thread idle: it is decoded, not skipped)."""
        recv = self.frames.recv_multipart
        clock = time.monotonic_ns
        for _ in range(MAX_DRAIN):
            try:
                parts = recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return None
            accepted = self._accept(parts, clock())
            if accepted is not None:
                return accepted
        return None

    def _take_newest(self) -> tuple[FrameHeader, np.ndarray, int] | None:
        """Every frame that arrived during a decision, NOBLOCK; the newest valid one wins, the
        rest count as skipped."""
        newest: tuple[FrameHeader, np.ndarray, int] | None = None
        recv = self.frames.recv_multipart
        clock = time.monotonic_ns
        for _ in range(MAX_DRAIN):
            try:
                parts = recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            accepted = self._accept(parts, clock())
            if accepted is None:
                continue
            if newest is not None:
                self.counters.frames_skipped += 1
                self._skipped_since_action += 1
            newest = accepted
        return newest

    def _accept(self, parts: list[zmq.Frame], t_recv_ns: int) -> tuple[FrameHeader, np.ndarray, int] | None:
        """Validate one frame message. Never raises on bad input: it is counted and dropped."""
        c = self.counters
        try:
            header, pixels = decode_frame(parts)
        except ProtocolError as exc:
            c.malformed_messages += 1
            self._warn("malformed", "malformed frame message dropped", reason=exc.reason)
            return None
        except Exception as exc:  # a reader must never die of its input, even through a codec bug
            c.malformed_messages += 1
            self._warn("malformed-bug", "frame decoding raised unexpectedly; dropped", level="error",
                       error=f"{type(exc).__name__}: {exc}")
            return None
        seq = header.seq
        last = self._last_rx_seq
        # saturating: a publisher may jump anywhere in the wire range, counters stay encodable
        lost, restarted = sequence_step(last, seq)
        if lost:
            c.frames_lost = saturating_add(c.frames_lost, lost)
            self._dropped_since_action = saturating_add(self._dropped_since_action, lost)
        elif restarted:
            c.sequence_restarts = saturating_add(c.sequence_restarts, 1)
            self._warn("restart", "frame sequence went backwards: publisher restarted", seq=seq, previous=last)
        self._last_rx_seq = seq
        if self.paused:
            c.frames_paused += 1
            return None
        if pixels.shape != self.expect_shape or pixels.dtype != self.expect_dtype:
            c.wrong_shape_frames += 1
            self._warn(
                "shape",
                "frame does not match the model; dropped",
                got=f"{header.dtype} {list(pixels.shape)}",
                expected=f"{self.expect_dtype} {list(self.expect_shape)}",
            )
            return None
        # float64 accumulation cannot overflow for finite float32 input, so a non-finite sum
        # means a NaN or inf pixel; no temporary array per frame.
        if pixels.dtype.kind == "f" and not math.isfinite(pixels.sum(dtype=np.float64)):
            c.non_finite_frames += 1
            self._warn("nan", "frame holds NaN or inf; dropped", seq=seq)
            return None
        c.frames_received += 1
        return header, pixels, t_recv_ns

    def _decide(self, header: FrameHeader, pixels: np.ndarray, t_recv_ns: int) -> None:
        """Decode one frame and publish its action (and events) at once."""
        self.running_call = "process"
        self.busy_since_ns = t_start = time.monotonic_ns()
        decision = self.pipeline.process(header.seq, header.t_acq_ns, pixels, self._skipped_since_action)
        self.busy_since_ns = 0
        self.inference_latency.record(decision.t_done_ns - t_start)
        self.counters.frames_decoded += 1
        decoding = decision.state == DECODING
        t_pub = time.monotonic_ns()
        action = Action(
            seq=header.seq,
            t_acq_ns=header.t_acq_ns,
            t_recv_ns=t_recv_ns,
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
        self.publisher.publish(action)
        self.latency.record(t_pub - t_recv_ns)
        if self.age is not None:
            age = t_pub - header.t_pub_ns
            if age >= 0:
                self.age.record(age)
            else:  # stamped in the future: the publisher's clock is not ours after all
                self.counters.frames_age_negative += 1
                self._warn("age", "frame stamped after its action was published: the publisher does not share this "
                           "host's clock; set sockets.frames_clock = \"separate\"", seq=header.seq)
        if decision.transitions:
            self.publish_events(decision.transitions, decision.class_names, decision.model_id, header.session)
        if decision.reset_reason is not None:
            self.counters.window_resets += 1
            self._warn("reset", "window reset", reason=decision.reset_reason, seq=header.seq, level="info")

    # ---- called between frames (mailbox calls run on this thread) ------------------------

    def publish_events(
        self, transitions: list[Transition], class_names: tuple[str, ...], model_id: str, session: str = ""
    ) -> None:
        for t in transitions:
            event = Event(
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
            self.publisher.publish(event)
            for output in self.outputs:  # one non-blocking write each; failures stay inside
                output.on_event(event)

    def publish_parts(self, parts: list[bytes], mirror_parts: list[bytes] | None = None) -> None:
        """An already encoded message from the loop (a status heartbeat; its JSON for the mirror)."""
        self.publisher.publish_parts(parts, mirror_parts)

    def pause(self) -> None:
        """Stop decoding (frames are counted as paused) and end the active action."""
        self.paused = True
        self.reset_window()

    def resume(self) -> None:
        self.paused = False

    def reset_window(self) -> None:
        model = self.pipeline.model
        transitions = self.pipeline.reset()
        self.counters.window_resets += 1
        self.publish_events(transitions, model.class_names, model.model_id)

    def swap(self, model: Any) -> Any:
        """Put a warmed-up model in place between two frames; returns the old one (to close)."""
        old, transitions = self.pipeline.swap(model)
        self.counters.window_resets += 1
        self.publish_events(transitions, old.class_names, old.model_id)
        return old

    def stop(self) -> None:
        self.stopped = True

    def _is_stopped(self) -> bool:
        return self.stopped

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Run a mailbox call, marked busy so that the watchdog sees one that hangs."""
        self.running_call = getattr(fn, "__name__", "call")
        self.busy_since_ns = time.monotonic_ns()
        try:
            return fn(*args)
        finally:
            self.busy_since_ns = 0

    def _warn(self, key: str, message: str, level: str = "warning", **fields: Any) -> None:
        """Rate-limited log line for per-frame conditions: at most one per key per interval."""
        held_back = self.limiter.allow(key)
        if held_back is None:
            return
        getattr(log, level)(message, similar_since_last=held_back, **fields)
