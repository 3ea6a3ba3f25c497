"""The daemon's online centring (decoder/adaptation.py) on a real exported bundle: the same
numbers as the trainer's reference rule (trainer/adaptation.py), refused when adaptation.json
does not belong to the graphs, off when the settings say so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from decoder.adaptation import HeadMismatch, OnlineCentredDecoder
from decoder.model import load_model
from decoder.settings import BackendSettings
from protocols.bundle import BundleError
from trainer.adaptation import OnlineCentring
from trainer.data.schema import ACTION_NAMES
from trainer.export import export_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RULE = OnlineCentring(prior_frames=3, time_constant_frames=6)  # short, so the forgetting phase is reached


def _settings(online: bool = True) -> BackendSettings:
    return BackendSettings(name="onnxruntime", warmup_frames=2, online_centring=online)


def _export(tiny_model, path: Path, weight=None, bias=None) -> Path:  # type: ignore[no-untyped-def]
    weight = tiny_model.head_weight if weight is None else weight
    bias = tiny_model.head_bias if bias is None else bias
    export_model(tiny_model.model, tiny_model.head_weight, tiny_model.head_bias, ACTION_NAMES, path,
                 frame_rate_hz=30.0, include_pt2=False, adaptation=RULE.bundle_record(weight, bias))
    return path


@pytest.fixture(scope="module")
def centred_bundle(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    return _export(tiny_model, tmp_path_factory.mktemp("centred") / "bundle")


def _stream(decoder, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    embeddings, probabilities = [], []
    for frame in frames:
        p = decoder.push(frame)
        if p is not None:
            embeddings.append(np.array(decoder.last_embedding, dtype=np.float64))
            probabilities.append(np.array(p, dtype=np.float64))
    return np.array(embeddings), np.array(probabilities)


def test_daemon_and_trainer_centre_alike(centred_bundle: Path, tiny_model, raw_frames: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    centred = load_model(centred_bundle, _settings())
    plain = load_model(centred_bundle, _settings(online=False))
    try:
        assert isinstance(centred.decoder, OnlineCentredDecoder) and centred.describe["online_centring"] is True
        assert not isinstance(plain.decoder, OnlineCentredDecoder) and plain.describe["online_centring"] is False
        embeddings, graph_probabilities = _stream(plain.decoder, raw_frames)
        _, probabilities = _stream(centred.decoder, raw_frames)
    finally:
        centred.close()
        plain.close()
    assert len(embeddings) == len(raw_frames) - centred.window + 1 > RULE.time_constant_frames
    w, b = tiny_model.head_weight.numpy().astype(np.float64), tiny_model.head_bias.numpy().astype(np.float64)
    logits = RULE.centre(embeddings) @ w.T + b
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    # the first decision has nothing to centre on yet: it is the graph's own
    np.testing.assert_allclose(probabilities[0], graph_probabilities[0], atol=1e-5)
    assert np.abs(probabilities[1:] - graph_probabilities[1:]).max() > 1e-3  # and later ones are not
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_a_window_reset_keeps_the_animal_mean(centred_bundle: Path, raw_frames: np.ndarray) -> None:
    model = load_model(centred_bundle, _settings())
    try:
        decoder = model.decoder
        _stream(decoder, raw_frames[:10])
        absorbed, mean = decoder.frames, decoder.mean.copy()
        assert absorbed == 10 - model.window + 1 and decoder.state()["offset_norm"] > 0
        decoder.reset()  # a gap in the frame stream: the window refills, the animal is the same
        assert decoder.fill == 0 and decoder.frames == absorbed and np.array_equal(decoder.mean, mean)
    finally:
        model.close()


def test_a_head_that_is_not_the_graphs_is_refused(tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _export(tiny_model, tmp_path / "bundle", weight=tiny_model.head_weight * 2)
    with pytest.raises(HeadMismatch, match="does not belong to this model"):
        load_model(path, _settings())
    load_model(path, _settings(online=False)).close()  # the graphs themselves are fine


def test_an_adaptation_file_of_the_wrong_shape_is_refused(tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BundleError, match="head is 7 x 7 but the model has 7 classes and a 8-d embedding") as err:
        _export(tiny_model, tmp_path / "bundle", weight=tiny_model.head_weight[:, :7])
    assert err.value.reason == "adaptation"
    assert not (tmp_path / "bundle").exists() and list(tmp_path.iterdir()) == []


def test_the_inference_bench_times_the_centring(cli, centred_bundle: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "inference.json"
    assert cli(["bench", "--bundle", str(centred_bundle), "--out", str(out), "--backends", "onnxruntime",
                "--frames", "40", "--warmup", "5", "--block", "20", "--no-progress"]) == 0
    report = json.loads(out.read_text())["onnxruntime"]
    assert report["streaming_online_centring"]["n"] == 40 == report["cpu_time"]["streaming_online_centring"]["n"]
    assert 0 < report["streaming_online_centring"]["p50_us"]
