"""The Prometheus endpoint: the real service in-process, frames through the real client library,
``/metrics`` scraped over HTTP and parsed with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from decoder.service import StartupError
from decoder.settings import SettingsError, load_settings

METRICS_ON = {"enabled": True, "port": 0}


def scrape(url: str) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """GET the page; (content type, {(sample name, sorted labels): value}) from the parser."""
    with urllib.request.urlopen(url, timeout=5) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return content_type, samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def histogram(samples: dict[Any, float], name: str) -> tuple[list[tuple[float, float]], float, float]:
    """([(le, cumulative count)], count, sum) of one histogram."""
    buckets = sorted(
        (float(dict(labels)["le"]), v) for (n, labels), v in samples.items() if n == f"{name}_bucket"
    )
    return buckets, samples[(f"{name}_count", ())], samples[(f"{name}_sum", ())]


async def test_scraped_counters_match_the_frames_sent(start_service, daemon_bundle: Path, kit) -> None:
    h = await start_service(daemon_bundle, metrics=METRICS_ON)
    url = h.service.endpoints["metrics"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    frames = kit.frames_for(16)
    await h.lockstep(frames[:10])  # seq 0..9
    await h.lockstep(frames[10:], first_seq=13)  # 10, 11, 12 lost upstream
    h.publisher.socket.send_multipart([b"frame", b"\xc1 not msgpack"])  # malformed
    while h.service.counters.malformed_messages < 1:
        await h.next_message()
    await h.drain(0.1)

    content_type, samples = await asyncio.to_thread(scrape, url)
    assert content_type.startswith("text/plain")
    assert value(samples, "actionloop_frames_received_total") == 16
    assert value(samples, "actionloop_frames_decoded_total") == 16
    assert value(samples, "actionloop_frames_skipped_total") == 0
    assert value(samples, "actionloop_frames_lost_total") == 3
    assert value(samples, "actionloop_malformed_messages_total") == 1
    assert value(samples, "actionloop_actions_published_total") == len(h.actions()) == 16
    # every counter the daemon keeps is exported, with the daemon's own value
    for name, count in h.service.counters.as_dict().items():
        if name not in ("status_published",):  # heartbeats go on while we read
            assert value(samples, f"actionloop_{name}_total") == count, name
    model = h.service.model
    assert model is not None
    assert value(samples, "actionloop_model_info", model_id=model.model_id, backend="onnxruntime",
                 mode="streaming", bundle=str(model.bundle.path)) == 1
    assert value(samples, "actionloop_state", state="running") == 1
    assert value(samples, "actionloop_state", state="paused") == 0
    assert value(samples, "actionloop_window_frames") == kit.WINDOW
    assert value(samples, "process_resident_memory_bytes") > 0

    # the latency histograms hold every decided frame's latency once
    receive_buckets, receive_count, receive_sum = histogram(samples, "actionloop_receive_to_publish_seconds")
    assert receive_count == 16 and receive_buckets[-1] == (float("inf"), 16)
    assert [c for _, c in receive_buckets] == sorted(c for _, c in receive_buckets)
    assert 0 < receive_sum < 16 * 1.0
    infer_buckets, infer_count, infer_sum = histogram(samples, "actionloop_inference_seconds")
    assert infer_count == 16 and 0 < infer_sum < receive_sum
    _, age_count, _ = histogram(samples, "actionloop_frame_age_seconds")  # loopback: the clock is shared
    assert age_count == 16
    assert value(samples, "actionloop_latency_samples_missed_total", histogram="receive_to_publish_seconds") == 0

    # a second scrape after more frames counts only the new ones in
    await h.lockstep(kit.frames_for(4, seed=5), first_seq=19)
    _, samples = await asyncio.to_thread(scrape, url)
    assert histogram(samples, "actionloop_receive_to_publish_seconds")[1] == 20
    assert value(samples, "actionloop_frames_decoded_total") == 20

    await h.control.request("pause")
    _, samples = await asyncio.to_thread(scrape, url)
    assert value(samples, "actionloop_state", state="paused") == 1
    assert value(samples, "actionloop_state", state="running") == 0


async def test_metrics_are_off_by_default_and_on_loopback_when_on(start_service, daemon_bundle: Path) -> None:
    defaults = load_settings().metrics
    assert defaults.enabled is False and defaults.host == "127.0.0.1"
    h = await start_service(daemon_bundle)
    assert "metrics" not in h.service.endpoints
    assert not [t for t in threading.enumerate() if t.name == "metrics-http"]
    reply = await h.control.request("status")
    assert "metrics" not in reply.data["endpoints"]


async def test_a_metrics_port_in_use_fails_the_startup_loudly(start_service, daemon_bundle: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=rf"cannot serve metrics on 127\.0\.0\.1:{port}: .*in use.*metrics\.port") as info:
            await start_service(daemon_bundle, metrics={"enabled": True, "port": port})
        assert info.value.exit_code == 1  # the port may be freed by then: systemd restarts
    assert not [t for t in threading.enumerate() if t.name == "metrics-http"]


async def test_bad_requests_to_the_metrics_port_leave_the_daemon_running(start_service, daemon_bundle: Path, kit) -> None:
    h = await start_service(daemon_bundle, metrics=METRICS_ON)
    url = h.service.endpoints["metrics"]
    port = int(url.rsplit(":", 1)[1].split("/")[0])

    def garbage() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"\x00\xff NOT HTTP \r\n\r\n")
            return conn.recv(4096)

    assert b"400" in await asyncio.to_thread(garbage)  # an error page (Bad request), not a hang
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # connect and hang up without a request
    await h.lockstep(kit.frames_for(3))
    _, samples = await asyncio.to_thread(scrape, url)
    assert value(samples, "actionloop_frames_decoded_total") == 3
    assert not h.task.done() and h.service.state == "running"


def test_metrics_settings_come_from_the_settings_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "decoder.toml"
    config.write_text('[metrics]\nenabled = true\nport = 9100\n')
    monkeypatch.setenv("ACTIONLOOP_METRICS__HOST", "10.0.0.7")
    m = load_settings(config).metrics
    assert (m.enabled, m.host, m.port) == (True, "10.0.0.7", 9100)
    config.write_text('[metrics]\nport = 70000\n')
    with pytest.raises(SettingsError, match="metrics.port"):
        load_settings(config)
