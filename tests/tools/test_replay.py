"""Replay: rate parsing, absolute-deadline pacing (fake clock), and the loop over real sockets."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from tools.bench.report import build_report
from tools.bench.frames import TRIAL_SEQ_GAP, ReplayData, ReplayError, chain
from tools.bench.pacing import DeadlinePacer, RateSpec, schedule_offsets_ns
from tools.bench.replay import ReplayOptions, replay


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [("recorded", "recorded", 1.0), ("MAX", "max", 1.0), ("2x", "speed", 2.0), ("0.5x", "speed", 0.5),
     ("300fps", "fps", 300.0), ("30", "fps", 30.0), (" 12.5 FPS ", "fps", 12.5)],
)
def test_rate_spec_parses(text: str, kind: str, value: float) -> None:
    rate = RateSpec.parse(text)
    assert (rate.kind, rate.value) == (kind, value)
    assert RateSpec.parse(str(rate)) == rate


@pytest.mark.parametrize("text", ["", "fast", "-2x", "0x", "2y", "x", "1e9fps"])
def test_bad_rates_are_refused_with_the_choices_named(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        RateSpec.parse(text)


def test_schedules_follow_recorded_times_speed_and_fixed_rates() -> None:
    times = np.array([5.0, 5.1, 5.25, 5.3])
    np.testing.assert_array_equal(schedule_offsets_ns(RateSpec("recorded"), times), [0, 100e6, 250e6, 300e6])
    np.testing.assert_array_equal(schedule_offsets_ns(RateSpec("speed", 2.0), times), [0, 50e6, 125e6, 150e6])
    np.testing.assert_array_equal(schedule_offsets_ns(RateSpec("fps", 400.0), times), [0, 2.5e6, 5e6, 7.5e6])
    assert schedule_offsets_ns(RateSpec("max"), times) is None
    with pytest.raises(ValueError, match="non-decreasing"):
        schedule_offsets_ns(RateSpec("recorded"), np.array([1.0, 0.5]))


class FakeClock:
    """A clock whose sleeps overshoot by a fixed amount, and that can jump (a stall)."""

    def __init__(self, overshoot_ns: int) -> None:
        self.now = 1_000_000_000
        self.overshoot_ns = overshoot_ns
        self.sleeps: list[float] = []

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += int(seconds * 1e9) + self.overshoot_ns


def test_pacer_uses_absolute_deadlines_so_oversleeping_never_accumulates() -> None:
    clock = FakeClock(overshoot_ns=200_000)  # every sleep wakes 0.2 ms late
    period = 33_333_333
    pacer = DeadlinePacer(np.arange(10_000, dtype=np.int64) * period, clock=clock, sleep=clock.sleep)
    start = pacer.start()
    lateness = [pacer.wait(i) for i in range(10_000)]
    # A relative sleep(period) loop would be 10,000 x 0.2 ms = 2 s behind by now.
    assert clock.now - (start + 9_999 * period) == 200_000
    assert max(lateness) == 200_000


def test_pacer_does_not_sleep_when_late_and_catches_up_on_schedule() -> None:
    clock = FakeClock(overshoot_ns=0)
    pacer = DeadlinePacer(np.arange(5, dtype=np.int64) * 10_000_000, clock=clock, sleep=clock.sleep)
    start = pacer.start()
    assert pacer.wait(0) == 0
    clock.now += 35_000_000  # a 35 ms stall: frames 1-3 are overdue
    n_sleeps = len(clock.sleeps)
    assert [pacer.wait(i) for i in (1, 2, 3)] == [25_000_000, 15_000_000, 5_000_000]
    assert len(clock.sleeps) == n_sleeps  # overdue frames go out at once
    assert pacer.wait(4) == 0
    assert clock.now == start + 40_000_000


def test_pacer_must_be_started() -> None:
    with pytest.raises(RuntimeError, match="start"):
        DeadlinePacer(np.zeros(1, dtype=np.int64)).wait(0)


def _options(echo, **kwargs) -> ReplayOptions:  # type: ignore[no-untyped-def]
    defaults = dict(frames_endpoint=echo.frames_endpoint, actions_endpoint=echo.actions_endpoint,
                    bind_frames=False, rate=RateSpec.parse("500fps"), connect_timeout_s=5.0, progress=False)
    defaults.update(kwargs)
    return ReplayOptions(**defaults)


def test_replay_through_the_echo_gets_every_frame_back(echo_server, tiny_data, zmq_context) -> None:  # type: ignore[no-untyped-def]
    data = tiny_data(n=60)
    result = replay(data, _options(echo_server, start_seq=1000), context=zmq_context)
    report = build_report(result)
    assert report.frames.as_dict() == {"sent": 60, "decoded": 60, "skipped": 0, "lost": 0}
    np.testing.assert_array_equal(result.sent_seq, np.arange(1000, 1060))
    assert sorted(result.action_seq.tolist()) == list(range(1000, 1060))
    assert np.all(report.end_to_end_us > 0)
    assert np.all(report.end_to_end_us >= report.daemon_us)
    # The echo decides nothing: no accuracy can be claimed from it.
    assert report.n_scored == 0 and report.accuracy is None
    assert echo_server.echo.echoed == 60


def test_recorded_rate_takes_the_recording_duration_and_speed_shortens_it(echo_server, tiny_data, zmq_context) -> None:  # type: ignore[no-untyped-def]
    data = tiny_data(n=21, rate_hz=100.0)  # 200 ms from first to last frame
    result = replay(data, _options(echo_server, rate=RateSpec.parse("recorded")), context=zmq_context)
    span_ns = int(result.sent_ns[-1] - result.sent_ns[0])
    assert span_ns >= 200_000_000  # absolute deadlines: never early
    result2 = replay(data, _options(echo_server, rate=RateSpec.parse("4x"), start_seq=100), context=zmq_context)
    span2_ns = int(result2.sent_ns[-1] - result2.sent_ns[0])
    assert 50_000_000 <= span2_ns < span_ns
    gaps = np.diff(result.sent_ns)
    assert np.all(gaps > 0)


def test_max_rate_runs_in_lock_step_with_the_decoder(echo_server, tiny_data, zmq_context) -> None:  # type: ignore[no-untyped-def]
    data = tiny_data(n=50)
    result = replay(data, _options(echo_server, rate=RateSpec.parse("max")), context=zmq_context)
    report = build_report(result)
    assert report.frames.decoded == 50
    # Lock-step: frame i+1 is published only after the action for frame i has arrived.
    order = np.argsort(result.action_seq)
    assert np.all(result.sent_ns[1:] >= result.received_ns[order][:-1])


def test_chained_trials_replay_as_one_stream_with_a_sequence_jump_between_trials(echo_server, tiny_data, zmq_context) -> None:  # type: ignore[no-untyped-def]
    first, second = tiny_data(n=10), tiny_data(n=15, rate_hz=100.0)
    data = chain([first, second])
    assert len(data) == 25
    np.testing.assert_array_equal(data.frame(12), second.frame(2))
    # Times run on: the second trial starts one of the first trial's frame intervals after its end.
    assert data.times_s[10] == pytest.approx(data.times_s[9] + 1 / 200.0)
    assert np.all(np.diff(data.times_s) > 0)
    result = replay(data, _options(echo_server), context=zmq_context)
    expected = np.concatenate([np.arange(10), 9 + TRIAL_SEQ_GAP + np.arange(15)])
    np.testing.assert_array_equal(result.sent_seq, expected)
    report = build_report(result)
    assert report.frames.decoded == 25 and report.frames.lost == 0
    assert result.labels is not None and len(result.labels) == 25


def test_chain_refuses_disagreeing_class_names_and_nothing(tiny_data) -> None:  # type: ignore[no-untyped-def]
    a, b = tiny_data(n=3), tiny_data(n=3)
    b.class_names = ("x", "y", "z")
    with pytest.raises(ValueError, match="class names"):
        chain([a, b])
    with pytest.raises(ValueError, match="no trials"):
        chain([])
    assert chain([a]) is a


def test_bad_sequence_numbers_are_refused(tiny_data) -> None:  # type: ignore[no-untyped-def]
    data = tiny_data(n=3)
    with pytest.raises(ValueError, match="seq must"):
        ReplayData(frames=data.frames, times_s=data.times_s, seq=np.array([0, 2, 2]))


def test_no_decoder_is_a_clear_error_not_a_hang(tiny_data, zmq_context) -> None:  # type: ignore[no-untyped-def]
    options = ReplayOptions(frames_endpoint="tcp://127.0.0.1:*", actions_endpoint="tcp://127.0.0.1:9",
                            connect_timeout_s=0.3, progress=False)
    started = time.monotonic()
    with pytest.raises(ReplayError, match="no decoder subscribed"):
        replay(tiny_data(n=3), options, context=zmq_context)
    assert time.monotonic() - started < 5


def test_a_subscriber_that_never_sends_a_heartbeat_is_reported(echo_server, tiny_data, zmq_context) -> None:  # type: ignore[no-untyped-def]
    # The echo subscribes to our frames, but we listen for actions where nothing publishes.
    silent_pub = zmq_context.socket(zmq.PUB)
    silent_pub.linger = 0
    port = silent_pub.bind_to_random_port("tcp://127.0.0.1")
    try:
        options = _options(echo_server, actions_endpoint=f"tcp://127.0.0.1:{port}", connect_timeout_s=0.5)
        with pytest.raises(ReplayError, match="heartbeat"):
            replay(tiny_data(n=3), options, context=zmq_context)
    finally:
        silent_pub.close(0)


def test_empty_data_is_refused(tiny_data, zmq_context) -> None:  # type: ignore[no-untyped-def]
    data = tiny_data(n=0)
    with pytest.raises(ReplayError, match="no frames"):
        replay(data, ReplayOptions("tcp://127.0.0.1:*", "tcp://127.0.0.1:9", progress=False), context=zmq_context)


def test_limited_data_reads_only_its_head(tiny_data) -> None:  # type: ignore[no-untyped-def]
    data = tiny_data(n=10)
    head = data.limited(4)
    assert len(head) == 4 and head.labels is not None and len(head.labels) == 4
    np.testing.assert_array_equal(head.frame(3), data.frame(3))
    with pytest.raises(IndexError):
        head.frame(4)
    assert data.limited(None) is data and data.limited(99) is data


def test_cli_refuses_bad_rate_and_missing_data(tmp_path: Path) -> None:
    import argparse

    from tools.bench import replay as replay_cli

    parser = argparse.ArgumentParser()
    replay_cli.configure(parser)
    args = parser.parse_args(["--data", str(tmp_path / "missing.h5"), "--rate", "warp9"])
    assert replay_cli.run(args) == 2
    args = parser.parse_args(["--data", str(tmp_path / "missing.h5")])
    assert replay_cli.run(args) == 2
    args = parser.parse_args(["--data", str(tmp_path), "--max-frames", "0"])
    assert replay_cli.run(args) == 2


def test_recordings_load_per_trial_with_one_label_per_neural_frame(small_trial_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from trainer.data.schema import ACTION_NAMES
    from tools.bench.frames import load_replay_data

    small_trial_file(tmp_path / "a.h5", n=30, trial_id="t0")
    small_trial_file(tmp_path / "b.h5", n=20, trial_id="t1")
    datasets = load_replay_data(tmp_path)
    try:
        assert [len(d) for d in datasets] == [30, 20]
        first = datasets[0]
        assert first.class_names == ACTION_NAMES
        assert first.labels is not None and len(first.labels) == 30
        # neural frame i sits at pose frame 2i: labels change every 10 pose frames = 5 neural frames
        np.testing.assert_array_equal(first.labels[:11], [0] * 5 + [1] * 5 + [2])
        assert first.frame(0).dtype == np.uint16 and first.frame(0).shape == (16, 16)
        single = load_replay_data(tmp_path / "b.h5")
        assert len(single) == 1 and single[0].name == "animal00/t1"
        single[0].close()
    finally:
        for d in datasets:
            d.close()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no \*\.h5 trial"):
        load_replay_data(empty)


def test_cli_replays_a_recording_into_the_echo_and_writes_json_and_png(echo_server, small_trial_file, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import argparse
    import json

    from tools.bench import replay as replay_cli

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    small_trial_file(data_dir / "a.h5", n=30, trial_id="t0")
    small_trial_file(data_dir / "b.h5", n=30, trial_id="t1")
    parser = argparse.ArgumentParser()
    replay_cli.configure(parser)
    args = parser.parse_args([
        "--data", str(data_dir), "--frames-endpoint", echo_server.frames_endpoint, "--frames-connect",
        "--actions-endpoint", echo_server.actions_endpoint, "--rate", "4x", "--max-frames", "45",
        "--out", str(tmp_path / "out"), "--no-progress",
    ])
    assert replay_cli.run(args) == 0
    printed = capsys.readouterr().out
    assert "end-to-end" in printed and "sent 45  decoded 45  skipped 0  lost 0" in printed
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["frames"] == {"sent": 45, "decoded": 45, "skipped": 0, "lost": 0, "duplicates": 0, "unexpected": 0}
    assert report["rate"] == "4x"
    assert (tmp_path / "out" / "latency.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_reports_a_broken_recording_clearly(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    import argparse

    from tools.bench import replay as replay_cli

    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"this is not HDF5")
    parser = argparse.ArgumentParser()
    replay_cli.configure(parser)
    assert replay_cli.run(parser.parse_args(["--data", str(bad)])) == 2
