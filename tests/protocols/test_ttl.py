"""The serial TTL byte protocol: one byte per line change, 0x7F all low."""

from __future__ import annotations

import pytest

from protocols.ttl import ALL_LOW, MAX_LINE, line_byte, read_byte


def test_every_line_and_level_is_one_byte_that_reads_back() -> None:
    seen = set()
    for line in range(MAX_LINE + 1):
        for high in (False, True):
            (value,) = line_byte(line, high)
            assert read_byte(value) == (line, high)
            seen.add(value)
    assert len(seen) == 2 * (MAX_LINE + 1) and ALL_LOW not in seen and 0xFF not in seen
    assert line_byte(0, True) == b"\x80" and line_byte(3, False) == b"\x03"
    assert read_byte(ALL_LOW) == (None, False)


@pytest.mark.parametrize("line", [-1, MAX_LINE + 1, 1.0, True])
def test_lines_outside_the_protocol_are_refused(line: object) -> None:
    with pytest.raises(ValueError, match="TTL line"):
        line_byte(line, True)  # type: ignore[arg-type]
