"""The shipped Arduino/Teensy sketch reads the serial TTL byte protocol as the daemon writes it.

No board is attached here: the sketch is compiled for this machine against a stand-in of the
Arduino API (tests/deploy/arduino_host/: Serial reads stdin, digitalWrite prints the pin and
level) and fed the bytes of protocols/ttl.py. What this cannot show: the board's own USB-serial
stack, its timing, and the pins' electrical levels.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from protocols.ttl import ALL_LOW_BYTES, line_byte

REPO = Path(__file__).resolve().parents[2]
SKETCH = REPO / "deploy" / "arduino" / "actionloop_ttl" / "actionloop_ttl.ino"
HOST = Path(__file__).parent / "arduino_host"
PINS = [2, 3, 4, 5, 6, 7, 8, 9]  # the sketch's PINS: line n -> PINS[n]

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to build the sketch for the host")


@pytest.fixture(scope="module")
def sketch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("sketch") / "actionloop_ttl"
    subprocess.run(
        ["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror", f"-I{HOST}", "-x", "c++", str(SKETCH), "-x", "none",
         str(HOST / "host_main.cpp"), "-o", str(binary)],
        check=True, capture_output=True, timeout=120,
    )
    return binary


def run(binary: Path, data: bytes) -> tuple[list[str], list[tuple[int, int]]]:
    out = subprocess.run([str(binary)], input=data, capture_output=True, check=True, timeout=30).stdout.decode()
    setup, _, after = out.partition("ready\n")
    writes = [tuple(int(v) for v in line.split()[1:]) for line in after.splitlines()]
    return setup.splitlines(), writes  # type: ignore[return-value]


def test_sketch_starts_with_every_line_low(sketch: Path) -> None:
    setup, writes = run(sketch, b"")
    assert setup == [f"mode {p} 1" for p in PINS] + [f"pin {p} 0" for p in PINS]
    assert writes == []


def test_sketch_follows_the_daemon_bytes(sketch: Path) -> None:
    data = (
        ALL_LOW_BYTES                 # the daemon opened the port
        + line_byte(1, True)          # onset on line 1
        + line_byte(40, True)         # a line this board does not have: ignored
        + line_byte(1, False)         # offset
        + line_byte(7, True)          # the last line
        + line_byte(0, True)
        + ALL_LOW_BYTES               # the daemon closed the port
    )
    _, writes = run(sketch, data)
    low = [(p, 0) for p in PINS]
    assert writes == low + [(3, 1), (3, 0), (9, 1), (2, 1)] + low
