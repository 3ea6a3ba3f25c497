"""`actionloop log FILE --nwb OUT.nwb`: the decisions of a real decision log, read back with pynwb."""

from __future__ import annotations

import functools
import importlib
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from decoder.decision_log import DecisionLogWriter
from protocols.codec import encode
from protocols.messages import Action, Event, Status
from tools.cli import main


# The nwb extra is installed by `make install` (CI too): there a missing package fails the run.
_require = importlib.import_module if os.environ.get("CI") else functools.partial(
    pytest.importorskip, reason="the nwb extra is not installed (pip install -e '.[nwb]')")


pynwb = _require("pynwb")

T0 = 5_000_000_000  # the acquisition's first frame, publisher's monotonic clock
MODEL = "b" * 64
NAMES = ["walk", "rest", "groom"]


def _action(seq: int, index: int) -> Action:
    t = T0 + seq * 62_500_000  # 16 Hz
    filling = index < 0
    return Action(seq=seq, t_acq_ns=t, t_recv_ns=t + 100_000, t_done_ns=t + 900_000, t_pub_ns=t + 1_000_000,
                  state="filling" if filling else "decoding", action="" if filling else NAMES[index],
                  index=index, probs=() if filling else (0.2, 0.7, 0.1), confidence=0.0 if filling else 0.7,
                  model_id=MODEL)


def _event(kind: str, seq: int, index: int, confidence: float) -> Event:
    return Event(kind=kind, action=NAMES[index], index=index, seq=seq, t_acq_ns=T0 + seq * 62_500_000,
                 t_pub_ns=T0 + seq * 62_500_000 + 1_000_000, confidence=confidence, model_id=MODEL)


def _log(path: Path) -> None:
    """Frames 2..3 fill the window; walk from frame 4, rest from 10 to the end of the log (frame 15)."""
    writer = DecisionLogWriter(path, rotate_bytes=1 << 20, keep=2)
    classes = [-1] * 4 + [0] * 6 + [1] * 6
    for seq, index in enumerate(classes, start=2):
        writer.append(encode(_action(seq, index)))
        if seq == 6:
            writer.append(encode(_event("onset", 6, 0, 0.8)))
        if seq == 12:
            writer.append(encode(_event("offset", 12, 0, 0.4)))
            writer.append(encode(_event("onset", 12, 1, 0.9)))
    writer.append(encode(Status(t_ns=T0, state="running", uptime_s=1.0, model_id=MODEL, backend="onnxruntime",
                                window=4, window_fill=4)))
    writer.close()


def test_decision_log_to_nwb(tmp_path: Path) -> None:
    log = tmp_path / "decisions.msgpack"
    _log(log)
    out = tmp_path / "decisions.nwb"
    argv = ["log", str(log), "--nwb", str(out), "--t0-ns", str(T0), "--session-start", "2026-12-01T10:00:00"]
    assert main(argv) == 0
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert nwb.session_start_time == datetime(2026, 12, 1, 10, tzinfo=timezone.utc)
        assert f"minus t0 = {T0} ns" in nwb.notes and "(given)" in nwb.notes
        table = nwb.intervals["decoded_actions"].to_dataframe()
        assert list(table["label"]) == ["walk", "rest"]
        np.testing.assert_allclose(table["start_time"], [6 * 0.0625, 12 * 0.0625])
        np.testing.assert_allclose(table["stop_time"], [12 * 0.0625, 17 * 0.0625])  # rest: until the last frame
        assert list(table["closed"]) == [True, False] and list(table["offset_seq"]) == [12, -1]
        assert list(table["onset_confidence"]) == pytest.approx([0.8, 0.9])
        assert set(table["model_id"]) == {MODEL}
        loop = nwb.processing["closed_loop"]
        cls = loop["decoded_class"]
        np.testing.assert_array_equal(cls.data[:], [-1] * 4 + [0] * 6 + [1] * 6)
        np.testing.assert_allclose(cls.timestamps[:], np.arange(2, 18) * 0.0625)
        assert "0=walk, 1=rest" in cls.description
        np.testing.assert_allclose(loop["decision_latency"].data[:], 0.001)
        assert np.isnan(loop["decoded_confidence"].data[0]) and loop["decoded_confidence"].data[5] == pytest.approx(0.7)
    assert main(argv) == 1  # exists
    assert main([*argv, "--force"]) == 0


def test_default_clock_starts_at_the_first_frame(tmp_path: Path) -> None:
    log = tmp_path / "decisions.msgpack"
    _log(log)
    out = tmp_path / "d.nwb"
    assert main(["log", str(log), "--nwb", str(out)]) == 0
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert nwb.processing["closed_loop"]["decoded_class"].timestamps[0] == 0.0
        assert "estimated from the log file's modification time" in nwb.notes


def test_nothing_to_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "empty.msgpack"
    writer = DecisionLogWriter(log, rotate_bytes=1 << 20, keep=2)
    writer.append(encode(Status(t_ns=1, state="running", uptime_s=1.0, model_id=MODEL, backend="onnxruntime",
                                window=4, window_fill=0)))
    writer.close()
    assert main(["log", str(log), "--nwb", str(tmp_path / "x.nwb")]) == 1
    assert "empty.msgpack: holds no action or event to export" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.nwb")) and not list(tmp_path.glob(".*tmp*"))
    assert main(["log", str(log), "--nwb", str(tmp_path / "x.nwb"), "--follow"]) == 2
