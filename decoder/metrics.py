"""The Prometheus endpoint: ``/metrics`` over HTTP, off by default (``[metrics]`` settings).

Nothing here runs per frame. At scrape time a custom collector reads what the daemon already
keeps for its status messages: the counters (plain ints the hot thread bumps), the state, the
model; the latency histograms are read off the hot path's latency rings by ``RingHistogram``
(decoder/ring_histogram.py), harvested by the event loop every ``HARVEST_INTERVAL_S`` and at
each scrape. Each service has its own registry, so two daemons (or tests) in one process do
not collide. The HTTP server is prometheus-client's: one thread that waits in ``select`` and
a short-lived thread per scrape.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from decoder.ring_histogram import RingHistogram
from decoder.stats import Counters

if TYPE_CHECKING:
    from decoder.service import DecoderService

PREFIX = "actionloop"
HARVEST_INTERVAL_S = 0.5
STATES = ("starting", "running", "paused", "stopping")

# Help text per counter; docs/daemon.md has the same table. A counter missing here is still
# exported, with a generic help.
COUNTER_HELP: dict[str, str] = {
    "frames_received": "well-formed frames accepted",
    "frames_decoded": "frames that went through the model (one action each)",
    "frames_skipped": "frames passed over for a newer one that arrived during a decision",
    "frames_lost": "frames missing upstream (holes in the sequence numbers)",
    "frames_paused": "frames received while paused",
    "window_resets": "window restarts (gaps, publisher restarts, pause/resume, model swaps)",
    "sequence_restarts": "frame sequence numbers going backwards (publisher restarted)",
    "malformed_messages": "messages on the frame socket that are not frame messages",
    "wrong_shape_frames": "frames not of the model's shape or dtype",
    "non_finite_frames": "float frames holding NaN or inf",
    "frames_age_negative": "decided frames stamped after their own action (clock not shared)",
    "actions_published": "action messages published",
    "events_published": "onset/offset events published",
    "status_published": "status heartbeats published",
    "control_requests": "control messages read",
    "control_errors": "control requests malformed or refused",
    "control_refused_busy": "control requests refused as busy (rate limit)",
    "auth_failures": "refused CURVE handshakes",
    "reloads": "model swaps done",
    "reloads_refused": "model swaps refused",
}


class DaemonCollector(Collector):
    """Reads the service's counters, state, model and latency histograms at scrape time."""

    def __init__(self, service: DecoderService, histograms: dict[str, tuple[RingHistogram, str]]) -> None:
        self.service = service
        self.histograms = histograms  # metric name -> (histogram, help)

    def collect(self) -> Iterator[Metric]:
        s = self.service
        for name, value in s.counters.as_dict().items():
            yield CounterMetricFamily(f"{PREFIX}_{name}", COUNTER_HELP.get(name, f"daemon counter {name}"), value=value)
        state = GaugeMetricFamily(f"{PREFIX}_state", "1 for the daemon's current state", labels=["state"])
        for name in STATES:
            state.add_metric([name], 1.0 if s.state == name else 0.0)
        yield state
        yield GaugeMetricFamily(f"{PREFIX}_uptime_seconds", "seconds since the daemon became ready", value=s.uptime_s)
        yield GaugeMetricFamily(
            f"{PREFIX}_inference_stalled_seconds", "how long the model call running now has run (0 when idle)",
            value=s.thread.stalled_for_s(),
        )
        pipeline = s.pipeline
        if pipeline is not None:
            model = pipeline.model
            yield InfoMetricFamily(f"{PREFIX}_model", "the model being decoded", value={
                "model_id": model.model_id, "backend": model.backend_name, "mode": model.mode,
                "bundle": str(model.bundle.path),
            })
            yield GaugeMetricFamily(f"{PREFIX}_window_frames", "window length of the model", value=model.window)
            yield GaugeMetricFamily(f"{PREFIX}_window_fill_frames", "frames in the window now", value=pipeline.window_fill)
            centring = getattr(model.decoder, "state", None)  # decoder.adaptation.OnlineCentredDecoder
            if centring is not None:
                state_now = centring()
                yield GaugeMetricFamily(f"{PREFIX}_online_centring_frames", "embeddings absorbed into the running "
                                        "mean of the online centring", value=state_now["frames"])
                yield GaugeMetricFamily(f"{PREFIX}_online_centring_offset", "norm of the running mean: how far "
                                        "the online centring has moved from the calibration's mean",
                                        value=state_now["offset_norm"])
        missed = CounterMetricFamily(
            f"{PREFIX}_latency_samples_missed", "latencies overwritten in the ring before a harvest read them",
            labels=["histogram"],
        )
        for name, (histogram, help_text) in self.histograms.items():
            histogram.harvest()
            snap = histogram.snapshot()
            buckets = [(_bound(b), c) for b, c in zip(snap.bounds_s, snap.cumulative)] + [("+Inf", snap.count)]
            yield HistogramMetricFamily(f"{PREFIX}_{name}", help_text, buckets=buckets, sum_value=snap.sum_s)
            missed.add_metric([name], snap.missed)
        yield missed


def _bound(seconds: float) -> str:
    return f"{seconds:.6g}"


def latency_histograms(service: DecoderService) -> dict[str, tuple[RingHistogram, str]]:
    """One histogram per latency ring of the hot path, each with the counter that tells how
    many values its ring has been given (``frames_decoded``: one of each per decided frame)."""
    hot = service.hot
    assert hot is not None
    c: Counters = service.counters
    histograms = {
        "receive_to_publish_seconds": (
            RingHistogram(hot.latency, lambda: c.frames_decoded),
            "the daemon's own latency per decided frame: frame received -> action published",
        ),
        "inference_seconds": (
            RingHistogram(hot.inference_latency, lambda: c.frames_decoded),
            "the model call per decided frame (encode, temporal head, debounce)",
        ),
    }
    if hot.age is not None:
        histograms["frame_age_seconds"] = (
            RingHistogram(hot.age, lambda: c.frames_decoded - c.frames_age_negative),
            "frame t_pub_ns -> its action published (socket queue included); only with a shared clock",
        )
    return histograms


class MetricsServer:
    """The registry and HTTP server of one service. ``start`` binds (OSError if it cannot)."""

    def __init__(self, service: DecoderService) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.histograms = latency_histograms(service)
        self.registry.register(DaemonCollector(service, self.histograms))
        ProcessCollector(registry=self.registry)  # CPU seconds, memory, open files of the daemon
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int) -> str:
        """Listen on host:port (0: any free port); returns the URL to scrape."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self._thread.name = "metrics-http"
        bound = self._server.server_address
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        return f"http://{shown}:{bound[1]}/metrics"

    async def harvest(self) -> None:
        """The event loop's task: read the latency rings often enough that none goes round unread."""
        while True:
            await asyncio.sleep(HARVEST_INTERVAL_S)
            for histogram, _ in self.histograms.values():
                histogram.harvest()

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)  # returns within serve_forever's 0.5 s poll
            server.server_close()
