"""`actionloop bench-serial` end to end at a small size: the real daemon process, a pty, every
byte matched to its event (the benchmark fails otherwise), the JSON written."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tools.bench import serial


def test_bench_serial_matches_every_byte_to_its_event(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    serial.configure(parser)
    out = tmp_path / "serial.json"
    args = parser.parse_args(["--out", str(out), "--work-dir", str(tmp_path / "work"), "--frames", "90",
                              "--floor-bytes", "20"])
    assert serial.run(args) == 0
    result = json.loads(out.read_text())
    daemon = result["daemon"]
    assert daemon["events"] > 0 and daemon["daemon_exit_code"] == 0
    assert daemon["event_to_byte"]["n"] == daemon["events"]
    assert 0 < daemon["event_to_byte"]["p50_us"] < daemon["frame_to_byte"]["p50_us"]
    assert result["floor"]["n"] == 20
    assert "| event published -> byte on the pty master |" in out.with_suffix(".md").read_text()
