"""The pure latency/accuracy report: matching by sequence number, percentiles, counts, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tools.bench.report import (
    STAT_KEYS,
    ReplayLog,
    build_report,
    format_latency_table,
    format_report,
    latency_stats_us,
    plot_latency,
    write_json_atomic,
)

CLASSES = ("a", "b", "c")


def make_log(
    sent: list[int],
    actions: list[tuple[int, int, int, int, int]],
    *,
    labels: list[int] | None = None,
    skipped: int = 0,
    t_sent: int = 1_000_000,
    period: int = 33_000_000,
) -> ReplayLog:
    """actions: (seq, received_ns, daemon_recv_ns, daemon_pub_ns, action_index)."""
    a = np.array(actions, dtype=np.int64).reshape(-1, 5)
    return ReplayLog(
        sent_seq=np.array(sent, dtype=np.int64),
        sent_ns=t_sent + period * np.arange(len(sent), dtype=np.int64),
        action_seq=a[:, 0],
        received_ns=a[:, 1],
        daemon_recv_ns=a[:, 2],
        daemon_pub_ns=a[:, 3],
        action_index=a[:, 4],
        daemon_skipped=skipped,
        labels=None if labels is None else np.array(labels),
        class_names=CLASSES if labels is not None else (),
    )


def test_latency_stats_match_numpy_percentiles_in_microseconds() -> None:
    rng = np.random.default_rng(0)
    samples = rng.integers(100_000, 5_000_000, size=5000)
    stats = latency_stats_us(samples)
    assert list(stats) == list(STAT_KEYS)
    assert stats["p50_us"] == pytest.approx(np.percentile(samples, 50) / 1e3)
    assert stats["p999_us"] == pytest.approx(np.percentile(samples, 99.9) / 1e3)
    assert stats["max_us"] == pytest.approx(samples.max() / 1e3)
    assert stats["p50_us"] <= stats["p90_us"] <= stats["p99_us"] <= stats["p999_us"] <= stats["max_us"]


def test_latency_stats_of_nothing_are_none_and_nan_is_refused() -> None:
    assert latency_stats_us([]) == {key: None for key in STAT_KEYS}
    with pytest.raises(ValueError, match="NaN"):
        latency_stats_us(np.array([1.0, np.nan]))


def test_actions_are_matched_to_frames_by_sequence_not_arrival_order() -> None:
    # Frame 11's action arrives before frame 10's; latencies must follow the sequence number.
    t0, period = 1_000_000, 33_000_000
    log = make_log(
        [10, 11, 12],
        [
            (11, t0 + period + 2_000_000, t0 + period + 100_000, t0 + period + 600_000, 1),
            (10, t0 + 3_000_000, t0 + 200_000, t0 + 1_200_000, 0),
        ],
        t_sent=t0,
        period=period,
    )
    report = build_report(log)
    assert sorted(report.end_to_end_us.tolist()) == [2000.0, 3000.0]
    assert sorted(report.daemon_us.tolist()) == [500.0, 1000.0]
    assert report.frames.as_dict() == {"sent": 3, "decoded": 2, "skipped": 0, "lost": 1}


def test_skipped_frames_come_from_the_daemon_and_the_rest_is_lost() -> None:
    sent = list(range(10))
    actions = [(s, 1_000_000 + 33_000_000 * s + 1_500_000, 0, 1, 0) for s in (0, 1, 2, 5, 9)]
    report = build_report(make_log(sent, actions, skipped=3))
    assert report.frames.as_dict() == {"sent": 10, "decoded": 5, "skipped": 3, "lost": 2}


def test_duplicate_and_unexpected_actions_are_counted_not_matched() -> None:
    actions = [
        (0, 2_000_000, 0, 10, 0),
        (0, 9_000_000, 0, 10, 0),  # duplicate: the first arrival counts
        (77, 9_000_000, 0, 10, 0),  # never sent
    ]
    report = build_report(make_log([0, 1], actions))
    assert report.frames.duplicates == 1
    assert report.frames.unexpected == 1
    assert report.frames.decoded == 1
    assert report.end_to_end_us.tolist() == [1000.0]


def test_accuracy_and_confusion_skip_unlabelled_frames_and_undecided_actions() -> None:
    sent = [0, 1, 2, 3, 4, 5]
    labels = [0, 1, 2, 2, -1, 1]
    decided = [0, 1, 1, 2, 0, -1]  # frame 4 unlabelled, frame 5 has no decision yet
    actions = [(s, 1_000_000 + 33_000_000 * s + 1000, 0, 1, d) for s, d in zip(sent, decided)]
    report = build_report(make_log(sent, actions, labels=labels))
    assert report.n_scored == 4
    assert report.accuracy == pytest.approx(3 / 4)
    expected = np.zeros((3, 3), dtype=int)
    expected[0, 0] = 1
    expected[1, 1] = 1
    expected[2, 1] = 1
    expected[2, 2] = 1
    np.testing.assert_array_equal(report.confusion, expected)


def test_no_labels_means_no_accuracy() -> None:
    report = build_report(make_log([0], [(0, 2_000_000, 0, 1, 0)]))
    assert report.accuracy is None and report.confusion is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sent_ns": np.zeros(1, dtype=np.int64)}, "sent_ns has 1"),
        ({"received_ns": np.zeros(0, dtype=np.int64)}, "received_ns has 0"),
        ({"labels": np.zeros(5, dtype=np.int64)}, "labels has 5"),
        ({"sent_seq": np.array([1, 1])}, "repeated"),
        ({"daemon_skipped": -1}, "daemon_skipped"),
    ],
)
def test_inconsistent_logs_are_refused_with_the_field_named(kwargs: dict, message: str) -> None:
    fields = dict(
        sent_seq=np.array([0, 1]),
        sent_ns=np.array([0, 10]),
        action_seq=np.array([0]),
        received_ns=np.array([5]),
        daemon_recv_ns=np.array([1]),
        daemon_pub_ns=np.array([2]),
        action_index=np.array([0]),
    )
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ReplayLog(**fields)


def test_time_travel_is_refused() -> None:
    with pytest.raises(ValueError, match="before its frame was sent"):
        build_report(make_log([0], [(0, 10, 0, 1, 0)], t_sent=1_000))
    with pytest.raises(ValueError, match="publish stamp precedes"):
        build_report(make_log([0], [(0, 2_000_000, 5, 1, 0)]))


def test_report_text_json_and_png(tmp_path: Path) -> None:
    sent = list(range(200))
    rng = np.random.default_rng(1)
    actions = [
        (s, 1_000_000 + 33_000_000 * s + int(rng.integers(800_000, 3_000_000)), 0, int(rng.integers(1, 900_000)), s % 3)
        for s in sent
    ]
    report = build_report(make_log(sent, actions, labels=[s % 3 for s in sent]))
    text = format_report(report)
    assert "end-to-end" in text and "daemon share" in text
    assert "accuracy: 1.000 over 200" in text
    assert "sent 200  decoded 200  skipped 0  lost 0" in text

    out = tmp_path / "sub" / "report.json"
    write_json_atomic(out, report.as_dict())
    loaded = json.loads(out.read_text())
    assert loaded["frames"]["decoded"] == 200
    assert loaded["confusion"][1][1] == 67
    assert [p.name for p in out.parent.iterdir()] == ["report.json"]  # no temporary left behind

    png = plot_latency({"end-to-end": report.end_to_end_us, "daemon": report.daemon_us}, tmp_path / "lat.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no latency samples"):
        plot_latency({"empty": np.empty(0)}, tmp_path / "none.png")


def test_json_writer_refuses_nan_and_leaves_no_half_file(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    out.write_text('{"old": true}\n')
    with pytest.raises(ValueError):
        write_json_atomic(out, {"x": float("nan")})
    assert json.loads(out.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_table_prints_dash_for_missing_and_ms_for_large_values() -> None:
    table = format_latency_table(
        {"x": latency_stats_us([]), "y": latency_stats_us([12_500_000, 12_500_000])}
    )
    assert "-" in table.splitlines()[2]
    assert "12.500 ms" in table


def test_breakdown_splits_end_to_end_into_hops() -> None:
    from tools.bench.report import latency_breakdown

    t0 = 1_000_000
    log = ReplayLog(
        sent_seq=np.array([0, 1]), sent_ns=np.array([t0, t0 + 10_000_000]),
        action_seq=np.array([1, 0, 0]),  # frame 1 first; frame 0 twice (the duplicate is ignored)
        received_ns=np.array([t0 + 10_000_000 + 2_000_000, t0 + 2_000_000, t0 + 9_000_000]),
        daemon_recv_ns=np.array([t0 + 10_000_000 + 300_000, t0 + 300_000, t0 + 300_000]),
        daemon_pub_ns=np.array([t0 + 10_000_000 + 1_800_000, t0 + 1_800_000, t0 + 1_800_000]),
        action_index=np.zeros(3, dtype=np.int64),
        daemon_done_ns=np.array([t0 + 10_000_000 + 1_700_000, t0 + 1_700_000, t0 + 1_700_000]),
    )
    hops = latency_breakdown(log)
    assert list(hops) == ["frame in flight (replay -> daemon)", "daemon: receive -> inference done",
                          "daemon: inference done -> publish", "action in flight (daemon -> replay)"]
    assert hops["frame in flight (replay -> daemon)"]["max_us"] == 300.0
    assert hops["daemon: receive -> inference done"]["p50_us"] == 1400.0
    assert hops["daemon: inference done -> publish"]["p50_us"] == 100.0
    assert hops["action in flight (daemon -> replay)"]["max_us"] == 200.0  # not the duplicate's 7.2 ms
