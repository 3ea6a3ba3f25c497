"""The decision log: append, read back, rotate, survive a cut-off tail, refuse what is not one."""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
from pathlib import Path

import msgpack
import pytest

from decoder.decision_log import DecisionLogError, DecisionLogWriter, read_records, rotated_paths
from protocols.codec import decode, encode
from protocols.messages import Action, Event, Status
from tools import decision_log as log_cli


def action(seq: int) -> Action:
    return Action(
        seq=seq, t_acq_ns=seq * 1000, t_recv_ns=seq * 1000 + 10, t_done_ns=seq * 1000 + 20,
        t_pub_ns=seq * 1000 + 30, state="decoding", action="resting", index=2,
        probs=(0.1, 0.1, 0.8), confidence=0.8, model_id="m" * 64,
    )


def event(seq: int) -> Event:
    return Event(kind="onset", action="resting", index=2, seq=seq, t_acq_ns=1, t_pub_ns=2, confidence=0.9,
                 model_id="m" * 64, duration_ns=100_000_000)


def status() -> Status:
    return Status(t_ns=5, state="running", uptime_s=1.5, model_id="m" * 64, backend="onnxruntime", window=4,
                  window_fill=4, counters={"frames_decoded": 3}, latency_us={"p99_us": 800.0})


def test_round_trip_in_order(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "decisions.msgpack"
    writer = DecisionLogWriter(path, rotate_bytes=1 << 20, keep=3)
    messages = [action(1), event(1), status(), action(2)]
    for m in messages:
        assert writer.append(encode(m))
    time.sleep(0.2)  # the writer thread has written them within a few ms: readable while open
    assert [decode(p) for p in read_records(path)] == messages
    writer.close()
    assert writer.records_written == 4 and writer.write_errors == 0


def test_reopening_appends(tmp_path: Path) -> None:
    path = tmp_path / "d.msgpack"
    for seq in range(3):
        writer = DecisionLogWriter(path, 1 << 20, 3)
        writer.append(encode(action(seq)))
        writer.close()
    assert [decode(p).seq for p in read_records(path)] == [0, 1, 2]


def test_rotation_by_size_keeps_the_newest_files(tmp_path: Path) -> None:
    path = tmp_path / "d.msgpack"
    writer = DecisionLogWriter(path, rotate_bytes=4096, keep=2)
    record = len(msgpack.packb(encode(action(0))))
    for seq in range(200):
        writer.append(encode(action(seq)))
        if seq % 5 == 4:
            writer.flush()  # one batch of 5 records, as the writer thread would write it
    writer.close()
    files = rotated_paths(path)
    assert [f.name for f in files] == ["d.msgpack.2", "d.msgpack.1", "d.msgpack"]
    assert all(f.stat().st_size < 4096 + 5 * record for f in files)  # rotation happens between batches
    seqs = [decode(p).seq for f in files for p in read_records(f)]
    assert seqs == list(range(seqs[0], 200)), "rotated files read oldest first give one unbroken tail"
    assert seqs[0] > 0  # the oldest were deleted (keep=2)


def test_a_record_cut_off_by_a_crash_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "d.msgpack"
    writer = DecisionLogWriter(path, 1 << 20, 3)
    for seq in range(5):
        writer.append(encode(action(seq)))
    writer.close()
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # SIGKILL in the middle of the last write
    assert [decode(p).seq for p in read_records(path)] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello world\n", "not an actionloop decision log"),
        (msgpack.packb({"something": "else"}), "not an actionloop decision log"),
        (msgpack.packb({"actionloop_decision_log": 1}) + msgpack.packb({"not": "a list"}), "not a list of message parts"),
        (msgpack.packb({"actionloop_decision_log": 1}) + b"\xc1\xc1", "corrupt record"),
    ],
)
def test_files_that_are_not_decision_logs_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.msgpack"
    path.write_bytes(content)
    with pytest.raises(DecisionLogError, match=message) as info:
        list(read_records(path))
    assert str(path) in str(info.value)


def test_unwritable_location_fails_at_startup(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        DecisionLogWriter(blocker / "d.msgpack", 1 << 20, 3)


def test_write_errors_are_counted_not_raised(tmp_path: Path) -> None:
    writer = DecisionLogWriter(tmp_path / "d.msgpack", 1 << 20, 3)
    assert writer._file is not None
    writer._file.close()
    writer._file = io.FileIO("/dev/full", "wb")  # the disk fills up under us: ENOSPC
    assert writer.append(encode(action(1)))  # queued: the hot path never waits for the disk
    writer.flush()
    writer.append(encode(action(2)))
    writer.flush()
    assert writer.write_errors == 2 and writer.records_written == 0
    writer.close()


def test_a_stalled_disk_never_blocks_append(tmp_path: Path) -> None:
    writer = DecisionLogWriter(tmp_path / "d.msgpack", 1 << 20, 3, max_pending=50)
    with writer._io_lock:  # the writer thread is stuck in a write (NFS hiccup, full journal)
        started = time.perf_counter()
        results = [writer.append(encode(action(seq))) for seq in range(80)]
        elapsed = time.perf_counter() - started
    assert elapsed < 0.5
    assert results.count(True) == 50 and writer.records_dropped == 30
    writer.close()
    assert [decode(p).seq for p in read_records(tmp_path / "d.msgpack")] == list(range(50))


def test_follow_reads_appends_and_rotation(tmp_path: Path) -> None:
    path = tmp_path / "d.msgpack"
    writer = DecisionLogWriter(path, rotate_bytes=4096, keep=50)
    writer.append(encode(action(0)))
    seen: list[int] = []

    def follow() -> None:
        for parts in read_records(path, follow=True, poll_s=0.01):
            seen.append(decode(parts).seq)
            if len(seen) == 120:
                return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    time.sleep(0.05)
    for seq in range(1, 120):  # a burst: the reader falls several rotations behind
        writer.append(encode(action(seq)))
        if seq % 5 == 0:
            writer.flush()
    reader.join(timeout=10)
    writer.close()
    assert seen == list(range(120)), "following across rotations loses or repeats nothing"
    assert len(rotated_paths(path)) > 3


def _cli(tmp_path: Path, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    log_cli.configure(parser)
    out = io.StringIO()
    code = log_cli.run(parser.parse_args(list(argv)), out=out)
    return code, out.getvalue()


def test_log_command_prints_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "d.msgpack"
    writer = DecisionLogWriter(path, 1 << 20, 3)
    for m in (status(), action(1), event(1), action(2)):
        writer.append(encode(m))
    writer.close()
    code, text = _cli(tmp_path, str(path))
    lines = text.splitlines()
    assert code == 0 and len(lines) == 4
    assert lines[1].startswith("action  seq=1") and "resting" in lines[1]
    assert lines[2].startswith("event   seq=1") and "ONSET" in lines[2]
    assert "2 actions, 1 events, 1 status messages" in capsys.readouterr().err
    code, text = _cli(tmp_path, str(path), "--json", "--only", "action")
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["seq"] for r in rows] == [1, 2] and rows[0]["type"] == "action" and rows[0]["probs"] == [0.1, 0.1, 0.8]


def test_log_command_reports_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(b"not a log")
    assert _cli(tmp_path, str(bad))[0] == 1
    assert "not an actionloop decision log" in capsys.readouterr().err
    assert _cli(tmp_path, str(tmp_path / "missing.msgpack"))[0] == 1
    assert _cli(tmp_path, str(bad), "--only", "bogus")[0] == 2
