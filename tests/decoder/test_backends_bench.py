"""`actionloop bench` (tools/bench_inference.py): the report's shape, table and figure, on the tiny
bundle with few frames. The real measurement is `make bench-inference`, never a timed test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tools.bench.inference import percentiles


def test_percentiles_in_microseconds() -> None:
    samples = np.arange(1, 1001, dtype=np.int64) * 1000  # 1..1000 µs
    p = percentiles(samples)
    assert p["n"] == 1000 and p["max_us"] == 1000.0
    assert p["p50_us"] == pytest.approx(500.5) and p["p99_us"] == pytest.approx(990.01)
    assert p["p999_us"] == pytest.approx(999.001, abs=0.01)  # rounded to 0.01 µs


def test_bench_writes_the_issue_shaped_report(cli, tiny_bundle, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench" / "inference.json"
    rc = cli([
        "bench", "--bundle", str(tiny_bundle.path), "--out", str(out), "--backends", "onnxruntime,torch",
        "--frames", "60", "--warmup", "5", "--block", "25", "--no-progress",
    ])
    assert rc == 0
    report = json.loads(out.read_text())
    for mode in ("streaming", "whole_window"):
        stats = report["onnxruntime"][mode]
        assert stats["n"] == 60
        assert 0 < stats["p50_us"] <= stats["p99_us"] <= stats["p999_us"] <= stats["max_us"]
    assert set(report["onnxruntime"]["parts"]) == {"encode_frame", "decode_window"}
    assert "streaming_online_centring" not in report["onnxruntime"]  # the tiny bundle has no adaptation.json
    assert report["onnxruntime"]["whole_window_over_streaming_p50"] > 0
    assert report["onnxruntime"]["cpu_time"]["streaming"]["n"] == 60
    assert report["onnxruntime"]["cpu_time"]["whole_window_over_streaming_p50"] > 0
    assert set(report["onnxruntime"]["max_abs_diff_vs_torch"]) == {"features", "embedding", "probabilities"}
    assert max(report["onnxruntime"]["max_abs_diff_vs_torch"].values()) <= 1e-4
    assert report["torch"]["streaming"]["n"] == 60
    assert report["model"]["window"] == tiny_bundle.window
    assert report["model"]["input_shape"] == list(tiny_bundle.frame_shape)
    assert report["machine"]["cpus"] >= 1 and "gpu" in report["machine"]
    assert set(report) == {"onnxruntime", "torch", "model", "machine"}  # the issue's shape
    assert report["machine"]["measurement"]["timed_frames_per_mode"] == 60
    assert (out.with_suffix(".png")).stat().st_size > 0
    table = capsys.readouterr().out
    assert "onnxruntime  streaming" in table and "whole/stream" in table
    assert "parity onnxruntime vs torch" in table


def test_bench_refuses_unknown_backends_and_bad_bundles(cli, tmp_path: Path) -> None:
    assert cli(["bench", "--bundle", str(tmp_path), "--backends", "tflite", "--out", str(tmp_path / "x.json")]) == 2
    assert cli(["bench", "--bundle", str(tmp_path / "missing"), "--out", str(tmp_path / "x.json")]) == 1
    assert not (tmp_path / "x.json").exists()
