"""What the event loop watches while the hot path decodes: heartbeat, watchdog, summaries.

None of this is per frame. The monitor reads the hot path's counters and latency windows
without locks (plain ints, preallocated arrays written by one thread) and hands each heartbeat,
already encoded, to the hot thread to publish: the action socket has one owner.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING

import structlog

from protocols.codec import encode
from protocols.messages import Status

if TYPE_CHECKING:
    from decoder.service import DecoderService

log = structlog.get_logger(__name__)


class Monitor:
    def __init__(self, service: DecoderService) -> None:
        self.service = service
        self._status_queued = False  # a heartbeat waits in the mailbox: do not pile up more
        self._stall_reported = False

    # ---- status --------------------------------------------------------------------------

    def status_message(self) -> Status:
        s = self.service
        assert s.pipeline is not None
        model = s.pipeline.model
        return Status(
            t_ns=time.monotonic_ns(),
            state=s.state,
            uptime_s=s.uptime_s,
            model_id=model.model_id,
            backend=model.backend_name,
            window=model.window,
            window_fill=s.pipeline.window_fill,
            counters=s.counters.as_dict(),
            latency_us=self.latency_summary(),
        )

    def publish_status(self) -> None:
        """A status on the action socket: through the hot thread while it runs, else directly."""
        s = self.service
        if s.thread.alive:
            if self._status_queued:
                return  # the previous one is not out yet (the hot thread is busy)
            assert s.publisher is not None
            self._status_queued = True
            status = self.status_message()  # encoded here, so the hot thread only sends
            s.thread.post(self._publish_on_hot_thread, encode(status), s.publisher.mirror_encode(status))
        elif s.publisher is not None:
            s.publisher.publish(self.status_message())

    def _publish_on_hot_thread(self, parts: list[bytes], mirror_parts: list[bytes] | None) -> None:
        assert self.service.hot is not None
        self._status_queued = False
        self.service.hot.publish_parts(parts, mirror_parts)

    def latency_summary(self) -> dict[str, float]:
        hot = self.service.hot
        if hot is None:
            return {}
        summary = hot.latency.percentiles_us()
        infer = hot.inference_latency.percentiles_us()
        if infer:
            summary["infer_p50_us"] = infer["p50_us"]
            summary["infer_p99_us"] = infer["p99_us"]
        age = hot.age.percentiles_us() if hot.age is not None else {}
        if age:  # publisher's t_pub_ns -> action published: socket-queue time included
            summary["age_p50_us"] = age["p50_us"]
            summary["age_p99_us"] = age["p99_us"]
            summary["age_max_us"] = age["max_us"]
        return summary

    # ---- tasks ---------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        interval = self.service.settings.policy.heartbeat_interval_s
        while True:
            await asyncio.sleep(interval)
            self.publish_status()

    async def health(self) -> None:
        """Watchdog pings from the loop (every WATCHDOG_USEC / 2), only while the loop and the
        hot-path thread are healthy; the thread is checked at least twice per stall timeout."""
        s = self.service
        notifier = s.notifier
        watchdog = notifier.watchdog_interval_s
        stall_timeout = s.settings.policy.stall_timeout_s
        interval = min(watchdog or 1.0, stall_timeout / 2, 1.0)
        last_ping = -math.inf
        while True:
            stalled = s.thread.stalled_for_s()
            healthy = s.thread.alive and stalled < stall_timeout
            if healthy:
                if self._stall_reported:
                    log.warning("inference thread recovered")
                    self._stall_reported = False
                now = time.monotonic()
                # the small margin keeps sleep jitter from stretching a ping to a whole check late
                if watchdog is not None and now - last_ping >= watchdog - interval / 4:
                    notifier.watchdog()
                    last_ping = now
            elif not self._stall_reported:
                self._stall_reported = True
                log.error(
                    "inference thread stuck; withholding watchdog pings",
                    running=s.thread.running_call,
                    stalled_s=round(stalled, 3),
                    alive=s.thread.alive,
                )
                notifier.status(f"inference stuck for {stalled:.1f} s")
            await asyncio.sleep(interval)

    async def summary(self) -> None:
        s = self.service
        interval = s.settings.logging.summary_interval_s
        previous = s.counters.as_dict()
        while True:
            await asyncio.sleep(interval)
            now = s.counters.as_dict()
            delta = {k: now[k] - previous[k] for k in ("frames_received", "frames_decoded", "frames_skipped", "frames_lost")}
            bad = sum(now[k] - previous[k] for k in ("malformed_messages", "wrong_shape_frames", "non_finite_frames"))
            previous = now
            latency = self.latency_summary()
            log.info("summary", interval_s=interval, state=s.state, bad_input=bad, **delta, **latency)
            model_id = s.pipeline.model.model_id[:12] if s.pipeline is not None else "-"
            s.notifier.status(
                f"{s.state}, model {model_id}: {now['frames_decoded']} frames decoded, {now['frames_skipped']} skipped, "
                f"{now['frames_lost']} lost; p99 {latency.get('p99_us', 0.0):.0f} us"
                + (f", frame age p99 {latency['age_p99_us']:.0f} us" if "age_p99_us" in latency else "")
            )
