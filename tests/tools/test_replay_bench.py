"""The latency benchmark: its pure parts, its process handling, and its seam with the daemon."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tools.bench import latency as replay_bench
from tools.bench.report import STAT_KEYS, ReplayLog, build_report, latency_stats_us
from tools.bench.pacing import RateSpec
from tools.bench.latency import replay_through
from tools.bench.processes import BenchError, ManagedProcess, daemon_env, start_echo
from tools.bench.ramp import find_sustained_rate, ramp_rates
from tools.bench.results import assemble_result, format_markdown, overhead_ratio, target_checks

ISSUE_KEYS = {"daemon", "end_to_end", "bare_floor", "transport_floor", "inference_floor", "naive_baseline",
              "overhead_ratio", "overhead_ratio_p50", "overhead_ratio_p99", "frames", "sustained_fps", "accuracy",
              "backend", "machine", "overload"}


def fake_rate_limit(limit: float):  # type: ignore[no-untyped-def]
    calls: list[float] = []

    def run_at(rate: float) -> tuple[bool, dict]:
        calls.append(rate)
        return rate <= limit, {"frames": {"skipped": 0 if rate <= limit else 3}}

    return run_at, calls


def test_sustained_rate_walks_up_then_bisects_between_pass_and_fail() -> None:
    run_at, calls = fake_rate_limit(500)
    best, steps = find_sustained_rate(run_at, [60, 120, 240, 300, 480, 960], refine=3)
    assert calls == [60, 120, 240, 300, 480, 960, 720, 600, 540]
    assert best == 480
    assert [s["ok"] for s in steps] == [True] * 5 + [False] * 4
    best, _ = find_sustained_rate(fake_rate_limit(650)[0], [60, 120, 240, 300, 480, 960], refine=3)
    assert best == 600  # 720 fails, 600 passes, 660 fails


def test_sustained_rate_when_everything_passes_or_nothing_does() -> None:
    assert find_sustained_rate(fake_rate_limit(1e9)[0], [60, 120])[0] == 120
    best, steps = find_sustained_rate(fake_rate_limit(10)[0], [60, 120])
    assert best is None and len(steps) == 1


def test_ramp_rates_double_and_include_the_targets() -> None:
    assert ramp_rates(30, 2000) == [30, 60, 120, 240, 300, 480, 960, 1000, 1920]
    assert ramp_rates(30, 100) == [30, 60]


def _report(e2e_us: list[float], daemon_us: list[float]):  # type: ignore[no-untyped-def]
    n = len(e2e_us)
    sent_ns = np.arange(n, dtype=np.int64) * 33_000_000 + 10**9
    recv = sent_ns + (np.array(e2e_us) * 1000).astype(np.int64)
    return build_report(ReplayLog(
        sent_seq=np.arange(n), sent_ns=sent_ns, action_seq=np.arange(n), received_ns=recv,
        daemon_recv_ns=sent_ns + 100, daemon_pub_ns=sent_ns + 100 + (np.array(daemon_us) * 1000).astype(np.int64),
        action_index=np.zeros(n, dtype=np.int64), labels=np.zeros(n, dtype=np.int64), class_names=("a", "b"),
    ))


def test_result_has_the_issue_shape_and_the_ratios_are_over_the_bare_floor() -> None:
    report = _report([1300.0] * 9 + [2600.0], [900.0] * 10)
    bare, inference = latency_stats_us([400_000] * 5), latency_stats_us([600_000] * 5)
    transport = latency_stats_us([500_000] * 5)
    result = assemble_result(daemon=report, bare=bare, transport=transport, inference=inference, naive=None,
                             sustained_fps=480.0, backend="onnxruntime", machine={"cpus": 2})
    assert set(result) == ISSUE_KEYS
    for key in ("daemon", "end_to_end", "bare_floor", "transport_floor", "inference_floor", "naive_baseline"):
        assert list(result[key]) == list(STAT_KEYS)
    assert result["naive_baseline"]["p50_us"] is None
    assert result["overhead_ratio"] == result["overhead_ratio_p50"] == pytest.approx(1.3)
    assert result["overhead_ratio_p99"] == pytest.approx(result["end_to_end"]["p99_us"] / 1000.0, rel=1e-3)
    assert result["frames"] == {"sent": 10, "decoded": 10, "skipped": 0, "lost": 0}
    assert result["accuracy"] == 1.0
    json.dumps(result, allow_nan=False)  # strictly valid JSON
    assert overhead_ratio(report.end_to_end, latency_stats_us([]), inference) is None


def test_targets_say_met_or_by_how_much_they_are_missed() -> None:
    report = _report([4000.0] * 10, [1000.0] * 10)
    result = assemble_result(daemon=report, bare=latency_stats_us([1_000_000]),
                             transport=latency_stats_us([1_200_000]), inference=latency_stats_us([1_000_000]),
                             naive=None, sustained_fps=150.0, backend="onnxruntime", machine={})
    checks = {c["key"]: c for c in target_checks(result)}
    assert checks["end_to_end_p50_us"]["goal_value"] == pytest.approx(2150.0)
    assert checks["end_to_end_p50_us"]["met"] is False
    assert checks["end_to_end_p50_us"]["missed_by"] == "1.85 ms (86 %) over"
    assert checks["overhead_ratio_p99"]["missed_by"] == "54 % over"
    assert checks["sustained_fps"]["missed_by"] == "85 % under"
    assert checks["skipped"]["met"] is True
    unmeasured = dict(result, sustained_fps=None)
    assert target_checks(unmeasured, "skips at 30")[-1]["missed_by"] == "skips at 30"
    details = {"settings": {"frames": 10, "rate_fps": 30.0, "command": "actionloop replay-bench --frames 10"},
               "frame": "256 x 256 uint16", "targets": target_checks(result), "model": {"how": "test"}}
    md = format_markdown(result, details)
    assert "| **daemon end-to-end** (published -> action received) | 4.00 |" in md
    assert "| bare floor (pyzmq echo, no codec, same harness) | 1.00 |" in md
    assert "**2.00** at p50, **2.00** at p99" in md
    assert "| end-to-end p99 / (bare floor p99 + inference p99) | <= 1.30 | 2.00 | no, 54 % over |" in md
    assert "`actionloop replay-bench --frames 10`" in md


def test_overload_steps_count_decisions_with_a_class_and_the_age_of_the_decided_frame() -> None:
    from tools.bench.overload import format_overload, run_overload

    def replay_at(rate: float, n: int) -> tuple[ReplayLog, dict]:
        """n frames 1 ms apart; every 4th decided and published 0.5 ms after it was sent; the
        first two actions fill the window."""
        sent_ns = np.arange(n, dtype=np.int64) * 1_000_000
        decided = np.arange(3, n, 4)
        pub = sent_ns[decided] + 500_000
        index = np.where(np.arange(len(decided)) < 2, -1, 1)
        log = ReplayLog(sent_seq=np.arange(n) + 50, sent_ns=sent_ns, action_seq=decided + 50, received_ns=pub + 1,
                        daemon_recv_ns=pub - 1, daemon_pub_ns=pub, action_index=index,
                        action_skipped=np.full(len(decided), 3))
        return log, {"skipped": 3 * len(decided), "lost": 0, "window_resets": 1, "daemon_age_p99_us": 2400.0}

    steps = run_overload(replay_at, 100.0, (2.0, 10.0), step_s=2.0, min_frames=300, max_frames=1000)
    assert [(s["factor"], s["rate_fps"], s["frames_sent"]) for s in steps] == [(2.0, 200.0, 400), (10.0, 1000.0, 1000)]
    first = steps[0]
    assert first["actions"] == 100 and first["with_class"] == pytest.approx(0.98) and first["degraded"] == 1.0
    assert first["achieved_fps"] == pytest.approx(1000.0) and first["achieved_factor"] == pytest.approx(10.0)
    assert first["age_us"]["p50_us"] == pytest.approx(500.0) and first["age_us"]["max_us"] == pytest.approx(500.0)
    md = "\n".join(format_overload(steps, 100.0, "given"))
    assert "| 2x = 200 fps | 400 (1000 fps, 10x) | 250.6 | 98.0 % | 100.0 % | 300 | 0 | 1 | 0.50 ms | 0.50 ms | 0.50 ms | 2.40 ms |" in md
    with pytest.raises(ValueError):
        run_overload(replay_at, 0.0, (2.0,), step_s=1.0)


def test_the_ramp_says_why_it_stopped() -> None:
    from tools.bench.ramp import explain_ramp

    ok = {"rate_fps": 480.0, "ok": True, "frames": {"sent": 1440, "skipped": 0, "lost": 0}}
    skipped = {"rate_fps": 960.0, "ok": False, "frames": {"sent": 2880, "skipped": 4, "lost": 0},
               "publisher_kept_pace": True, "achieved_fps": 960.0, "daemon_p50_us": 300.0, "daemon_p99_us": 900.0,
               "daemon_max_us": 4000.0, "daemon_infer_p50_us": 150.0}
    note = explain_ramp([ok, skipped], 480.0, 8000)
    assert note.startswith("skips begin between 480 and 960 frames/s") and "skipped 4 and lost 0 of 2880" in note
    slow_sender = dict(skipped, publisher_kept_pace=False, achieved_fps=700.0, publisher_late_p99_us=2500.0)
    assert "the replay itself could not send 960 frames/s" in explain_ramp([ok, slow_sender], 480.0, 8000)
    assert explain_ramp([ok], 480.0, 480.0) == "no skip up to the highest rate tried, 480 frames/s"
    bursty = dict(skipped, daemon_max_us=900.0, publisher_bursts=3, publisher_late_p99_us=2900.0)
    assert "sent 3 frames less than half an interval after the previous one" in explain_ramp([ok, bursty], 480.0, 8000)


def test_daemon_settings_from_the_environment_are_what_the_daemon_reads(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from decoder.settings import load_settings

    endpoints = {"frames": "tcp://127.0.0.1:5001", "actions": "tcp://127.0.0.1:5002", "control": "tcp://127.0.0.1:5003"}
    env = daemon_env(tmp_path / "bundle", endpoints, "torch", "whole_window", 1, tmp_path / "d.msgpack")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.model.bundle == tmp_path / "bundle"
    assert (settings.sockets.frames, settings.sockets.frames_mode) == (endpoints["frames"], "connect")
    assert (settings.sockets.actions, settings.sockets.control) == (endpoints["actions"], endpoints["control"])
    assert (settings.backend.name, settings.backend.mode, settings.backend.threads) == ("torch", "whole_window", 1)
    assert settings.decision_log.path == tmp_path / "d.msgpack"


def test_a_child_that_dies_is_reported_with_its_exit_code_and_log(tmp_path: Path) -> None:
    proc = ManagedProcess("doomed", [sys.executable, "-c", "print('model file is corrupt'); raise SystemExit(3)"],
                          {}, tmp_path / "doomed.log")
    proc.proc.wait(timeout=30)
    with pytest.raises(BenchError, match=r"(?s)exited with code 3.*model file is corrupt"):
        proc.check_alive()
    assert proc.stop() == 3


def test_replay_through_a_real_echo_process(tmp_path: Path, tiny_data) -> None:  # type: ignore[no-untyped-def]
    endpoints = replay_bench.loopback_endpoints()
    with start_echo(endpoints, tmp_path / "echo.log") as echo:
        run = replay_through(echo, "echo", tiny_data(n=30), endpoints, RateSpec.parse("300fps"), progress=False,
                             connect_timeout_s=30)
    assert echo.returncode == 0
    assert run.report.frames.as_dict() == {"sent": 30, "decoded": 30, "skipped": 0, "lost": 0}
    assert run.achieved_fps == pytest.approx(300, rel=0.2)
    assert run.report.end_to_end["p50_us"] is not None


def test_cli_refuses_bad_arguments_before_doing_any_work(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    replay_bench.configure(parser)
    for argv in (["--frames", "0"], ["--rate", "-1"], ["--bundle", str(tmp_path / "none")],
                 ["--floor-frames", "0"], ["--realtime", "0"], ["--realtime", "100"],
                 ["--overload-factors", "2,x"], ["--overload-factors", "0"], ["--overload-base-fps", "-1"]):
        args = parser.parse_args([*argv, "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "l.json")])
        assert replay_bench.run(args) == 2
    assert not (tmp_path / "w").exists() and not (tmp_path / "l.json").exists()


@pytest.mark.slow
def test_the_whole_benchmark_on_a_tiny_model(tmp_path: Path) -> None:
    """Simulated held-out animal at 32 x 32, a tiny exported model, the real daemon twice, the echo."""
    import torch

    from trainer.data.schema import ACTION_NAMES
    from trainer.export import export_model
    from trainer.models import build_model

    torch.manual_seed(0)
    model = build_model("neural_conv", frame_shape=(32, 32), window=4, channels=(4, 8), features=8,
                        temporal_channels=8, embedding_dim=8).eval()
    export_model(model, torch.randn(len(ACTION_NAMES), 8), torch.zeros(len(ACTION_NAMES)), ACTION_NAMES,
                 tmp_path / "bundle", frame_rate_hz=30.0)
    settings = replay_bench.BenchSettings(
        out=tmp_path / "bench" / "latency.json", work_dir=tmp_path / "work", bundle=tmp_path / "bundle",
        frames=120, naive_frames=40, rate_fps=60.0, frame_shape=(32, 32), ramp_step_s=0.5, ramp_max_fps=240,
        overload_step_s=0.5, progress=False, command="test",
    )
    result = replay_bench.run_benchmark(settings)
    assert set(result) == ISSUE_KEYS
    assert result["frames"]["sent"] == 120
    assert result["frames"]["decoded"] + result["frames"]["skipped"] + result["frames"]["lost"] == 120
    assert result["accuracy"] is not None  # the simulated recording has labels
    assert result["naive_baseline"]["p50_us"] is not None
    steps = result["overload"]["steps"]
    assert [s["factor"] for s in steps] == [2.0, 10.0, 100.0] and all(s["actions"] > 0 for s in steps)
    assert json.loads(settings.out.read_text()) == result
    details = json.loads((settings.out.parent / "latency-details.json").read_text())
    assert details["ramp"] and details["daemon_exit_code"] == 0
    assert "| target | goal | measured | met |" in settings.out.with_suffix(".md").read_text()
    assert settings.out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
