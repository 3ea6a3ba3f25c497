"""The daemon with a bundle that carries online centring: its published probabilities are the
reference rule's (trainer/adaptation.py) applied to the graph's embeddings, and status and
/metrics say how far the running mean has come."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from decoder.model import load_model
from decoder.settings import BackendSettings

from .conftest import ONLINE_CENTRING
from .test_metrics import METRICS_ON, scrape, value


def _reference(bundle: Path, frames: np.ndarray) -> np.ndarray:
    """Offline: the graph's embeddings (centring off), then the trainer's rule and the head."""
    model = load_model(bundle, BackendSettings(name="onnxruntime", warmup_frames=2, online_centring=False))
    try:
        embeddings = []
        for frame in frames:
            if model.decoder.push(frame) is not None:
                embeddings.append(np.array(model.decoder.last_embedding, dtype=np.float64))
        record = model.bundle.adaptation
    finally:
        model.close()
    assert record is not None
    logits = ONLINE_CENTRING.centre(np.array(embeddings)) @ np.array(record.head_weight).T + np.array(record.head_bias)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probabilities / probabilities.sum(axis=1, keepdims=True)


async def test_published_probabilities_follow_the_online_centring(start_service, centred_bundle: Path, kit) -> None:
    frames = kit.frames_for(20)
    expected = await asyncio.to_thread(_reference, centred_bundle, frames)
    h = await start_service(centred_bundle, metrics=METRICS_ON)
    actions = await h.lockstep(frames)
    decided = [a for a in actions if a.state == "decoding"]
    assert len(decided) == len(expected) == len(frames) - kit.WINDOW + 1
    np.testing.assert_allclose(np.array([a.probs for a in decided]), expected, atol=1e-5)
    status = (await h.control.request("status")).data
    centring = status["online_centring"]
    assert centring["enabled"] is True and centring["frames"] == len(decided) and centring["offset_norm"] > 0
    _, samples = await asyncio.to_thread(scrape, h.service.endpoints["metrics"])
    assert value(samples, "actionloop_online_centring_frames") == len(decided)
    assert value(samples, "actionloop_online_centring_offset") == centring["offset_norm"]


async def test_online_centring_can_be_switched_off(start_service, centred_bundle: Path, kit) -> None:
    h = await start_service(centred_bundle, backend={"online_centring": False})
    await h.lockstep(kit.frames_for(6))
    status = (await h.control.request("status")).data
    assert status["online_centring"] == {"enabled": False}
