"""The byte protocol of the serial TTL output: one byte per line change (docs/rig.md).

Read by a microcontroller (deploy/arduino/actionloop_ttl/actionloop_ttl.ino) on a USB-serial
line, 8 data bits, no parity, one stop bit:

- ``0x80 | line`` (bit 7 set): drive ``line`` high (an action's onset);
- ``line`` (bit 7 clear): drive ``line`` low (its offset);
- ``0x7F`` (``ALL_LOW``): every line low; sent whenever the daemon opens the port (then the
  lines that should be high follow) and when it closes it.

``line`` is 0..126 (127 is the all-low code, so ``0xFF`` is never sent). A reader ignores
bytes for lines it does not have. There is no framing to lose sync on: every byte stands alone.
"""

from __future__ import annotations

MAX_LINE = 126
ALL_LOW = 0x7F
HIGH_BIT = 0x80

ALL_LOW_BYTES = bytes([ALL_LOW])
# One bytes object per line and level, made once: writing one allocates nothing.
_HIGH = tuple(bytes([HIGH_BIT | line]) for line in range(MAX_LINE + 1))
_LOW = tuple(bytes([line]) for line in range(MAX_LINE + 1))


def line_byte(line: int, high: bool) -> bytes:
    """The one byte that drives ``line`` (0..MAX_LINE) high or low."""
    if type(line) is not int or not 0 <= line <= MAX_LINE:
        raise ValueError(f"TTL line must be an integer in 0..{MAX_LINE}, got {line!r}")
    return _HIGH[line] if high else _LOW[line]


def read_byte(value: int) -> tuple[int | None, bool]:
    """What one received byte says: (line, high), or (None, False) for ALL_LOW."""
    if not 0 <= value <= 0xFF:
        raise ValueError(f"not a byte: {value!r}")
    if value == ALL_LOW:
        return None, False
    return value & ALL_LOW, bool(value & HIGH_BIT)
