"""Message types of the wire format and their strict, cheap validation.

Each message is a small dataclass. ``to_wire()`` gives the msgpack-ready dict;
``from_wire(mapping)`` validates one and raises :class:`ProtocolError` naming the first
problem. Keys not listed here are ignored (a newer publisher may add fields within a
schema version); a missing key, a wrong type, a non-finite number or an out-of-range value
is an error. See docs/wire-protocol.md for the same rules in prose.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from protocols.errors import ProtocolError

SCHEMA_VERSION = 1

TOPIC_FRAME = b"frame"
TOPIC_ACTION = b"action"
TOPIC_EVENT = b"event"
TOPIC_STATUS = b"status"

FRAME_DTYPES = ("uint8", "uint16", "float32")
MAX_FRAME_SIDE = 16384
MAX_FRAME_BYTES = 64 * 1024 * 1024
"""Largest pixel buffer of a frame message (64 MiB: 4096 x 4096 float32, 8192 x 4096 uint16).
The decoder's ZeroMQ socket always takes messages of this size (its `maxmsgsize` is at least
this); libzmq drops a larger message together with the connection before any reader sees it,
so the spec does not allow larger ones and writers refuse them."""
MAX_NAME_LEN = 128
MAX_CLASSES = 1024
MAX_MAP_ITEMS = 64
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

WIRE_INT_MIN = 0
WIRE_INT_MAX = UINT64_MAX
"""The one integer range of the wire: every sequence number, timestamp, duration, counter
(``dropped``, ``skipped``, the status ``counters``) and control request id is an integer in
[WIRE_INT_MIN, WIRE_INT_MAX] = [0, 2**64 - 1], msgpack's unsigned 64-bit family. Every reader
refuses a value outside it; every writer saturates counters and durations into it and refuses
(ProtocolError) a sequence number, timestamp or id outside it. docs/wire-protocol.md says the same."""

Checker = Callable[[str, Any], Any]


def saturate(value: int) -> int:
    """`value` clamped into the wire's integer range (a counter that would overflow stays at the top)."""
    if value > WIRE_INT_MAX:
        return WIRE_INT_MAX
    if value < WIRE_INT_MIN:
        return WIRE_INT_MIN
    return value


def saturating_add(total: int, n: int) -> int:
    """`total + n` for a wire counter: never above WIRE_INT_MAX, never below 0.

    The daemon's counters are Python ints (they never overflow by themselves); this keeps them
    inside what the wire can carry however large the jumps a publisher sends.
    """
    return saturate(total + n)


def sequence_step(last: int | None, seq: int) -> tuple[int, bool]:
    """What frame `seq` says after frame `last`: (frames missing in between, publisher restarted).

    Both are wire integers; the missing count is at most WIRE_INT_MAX - 1, so adding it with
    `saturating_add` is always safe. `last` None (the first frame) gives (0, False).
    """
    if last is None or seq == last + 1:
        return 0, False
    if seq > last:
        return seq - last - 1, False
    return 0, True


def _fail(key: str, what: str) -> ProtocolError:
    return ProtocolError(f"field {key!r}: {what}")


class _Int:
    """Checker of one integer field; `kind` says what a writer does with it (see `_Message.to_wire`)."""

    __slots__ = ("hi", "kind", "lo")

    def __init__(self, lo: int, hi: int, kind: str = "plain") -> None:
        self.lo, self.hi, self.kind = lo, hi, kind

    def __call__(self, key: str, value: Any) -> int:
        # bool is an int subclass in Python but not a number on the wire.
        if type(value) is not int:
            raise _fail(key, f"expected an integer, got {type(value).__name__}")
        if not self.lo <= value <= self.hi:
            raise _fail(key, f"{value} is outside [{self.lo}, {self.hi}]")
        return value


def _int(lo: int = WIRE_INT_MIN, hi: int = WIRE_INT_MAX) -> Checker:
    return _Int(lo, hi)


def _wire_int() -> Checker:
    """Sequence number, timestamp or id: a writer refuses a value outside the wire's range."""
    return _Int(WIRE_INT_MIN, WIRE_INT_MAX, "checked")


def _counter() -> Checker:
    """Counter or duration: a writer saturates it into the wire's range."""
    return _Int(WIRE_INT_MIN, WIRE_INT_MAX, "saturated")


def _float(lo: float = -math.inf, hi: float = math.inf) -> Checker:
    def check(key: str, value: Any) -> float:
        if type(value) not in (int, float):
            raise _fail(key, f"expected a number, got {type(value).__name__}")
        value = float(value)
        if not math.isfinite(value):
            raise _fail(key, "is not finite (NaN or infinity)")
        if not lo <= value <= hi:
            raise _fail(key, f"{value} is outside [{lo}, {hi}]")
        return value

    return check


def _str(max_len: int = MAX_NAME_LEN, choices: tuple[str, ...] | None = None) -> Checker:
    def check(key: str, value: Any) -> str:
        if type(value) is not str:
            raise _fail(key, f"expected a string, got {type(value).__name__}")
        if len(value) > max_len:
            raise _fail(key, f"string longer than {max_len} characters")
        if choices is not None and value not in choices:
            raise _fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    return check


def _bool(key: str, value: Any) -> bool:
    if type(value) is not bool:
        raise _fail(key, f"expected true/false, got {type(value).__name__}")
    return value


def _optional(inner: Checker) -> Checker:
    def check(key: str, value: Any) -> Any:
        return None if value is None else inner(key, value)

    return check


def _float_list(max_len: int = MAX_CLASSES) -> Checker:
    number = _float()

    def check(key: str, value: Any) -> tuple[float, ...]:
        if type(value) not in (list, tuple):
            raise _fail(key, f"expected an array, got {type(value).__name__}")
        if len(value) > max_len:
            raise _fail(key, f"array longer than {max_len}")
        return tuple(number(key, v) for v in value)

    return check


def _shape(key: str, value: Any) -> tuple[int, int]:
    if type(value) not in (list, tuple) or len(value) != 2:
        raise _fail(key, "expected [height, width]")
    side = _int(1, MAX_FRAME_SIDE)
    return side(key, value[0]), side(key, value[1])


def _map(value_checker: Checker) -> Checker:
    def check(key: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _fail(key, f"expected a map, got {type(value).__name__}")
        if len(value) > MAX_MAP_ITEMS:
            raise _fail(key, f"map with more than {MAX_MAP_ITEMS} entries")
        out: dict[str, Any] = {}
        for k, v in value.items():
            if type(k) is not str or len(k) > MAX_NAME_LEN:
                raise _fail(key, "map keys must be short strings")
            out[k] = value_checker(f"{key}.{k}", v)
        return out

    check.values = value_checker  # type: ignore[attr-defined]  # read by _Message.__init_subclass__
    return check


def _clamp_scalars(value: Any) -> Any:
    """Control arguments and reply data with every integer clamped into what msgpack can carry:
    counters (e.g. a status reply's) saturate at WIRE_INT_MAX, negatives at INT64_MIN."""
    if type(value) is int:
        return INT64_MIN if value < INT64_MIN else saturate(value) if value > 0 else value
    if isinstance(value, (list, tuple)):
        return [_clamp_scalars(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _clamp_scalars(v) for k, v in value.items()}
    return value


def _scalar(key: str, value: Any) -> Any:
    """Control arguments and reply data: plain scalars, short strings, or nested small maps/lists."""
    if value is None or type(value) in (bool, int):
        return value
    if type(value) is float:
        return _float()(key, value)
    if type(value) is str:
        return _str(4096)(key, value)
    if type(value) in (list, tuple):
        if len(value) > MAX_CLASSES:
            raise _fail(key, f"array longer than {MAX_CLASSES}")
        return [_scalar(key, v) for v in value]
    if isinstance(value, Mapping):
        return _map(_scalar)(key, value)
    raise _fail(key, f"unsupported value of type {type(value).__name__}")


M = TypeVar("M", bound="_Message")


class _Message:
    """Shared wire conversion driven by each subclass's ``FIELDS`` table."""

    __slots__ = ()
    FIELDS: ClassVar[dict[str, Checker]]
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    _CHECKED: ClassVar[tuple[str, ...]] = ()
    _SATURATED: ClassVar[tuple[str, ...]] = ()
    _SATURATED_MAPS: ClassVar[tuple[str, ...]] = ()
    _SCALAR_MAPS: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = cls.__dict__.get("FIELDS", {})
        cls._CHECKED = tuple(n for n, c in fields.items() if getattr(c, "kind", None) == "checked")
        cls._SATURATED = tuple(n for n, c in fields.items() if getattr(c, "kind", None) == "saturated")
        cls._SATURATED_MAPS = tuple(
            n for n, c in fields.items() if getattr(getattr(c, "values", None), "kind", None) == "saturated"
        )
        cls._SCALAR_MAPS = tuple(n for n, c in fields.items() if getattr(c, "values", None) is _scalar)

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-ready map. Counters and durations saturate into the wire's integer range
        (a huge jump in a publisher's sequence numbers cannot make this raise OverflowError);
        a sequence number, timestamp or id outside it is a ProtocolError naming the field."""
        wire: dict[str, Any] = {"v": SCHEMA_VERSION}
        for name in self.FIELDS:
            value = getattr(self, name)
            if isinstance(value, tuple):
                value = list(value)
            wire[name] = value
        for name in self._SATURATED:
            value = wire[name]
            if type(value) is int and not WIRE_INT_MIN <= value <= WIRE_INT_MAX:
                wire[name] = saturate(value)
        for name in self._SATURATED_MAPS:
            values = wire[name]
            if any(type(v) is int and not WIRE_INT_MIN <= v <= WIRE_INT_MAX for v in values.values()):
                wire[name] = {k: saturate(v) if type(v) is int else v for k, v in values.items()}
        for name in self._SCALAR_MAPS:
            wire[name] = _clamp_scalars(wire[name])
        for name in self._CHECKED:
            value = wire[name]
            if type(value) is int and not WIRE_INT_MIN <= value <= WIRE_INT_MAX:
                raise _fail(name, f"{value} is outside the wire's integer range [{WIRE_INT_MIN}, {WIRE_INT_MAX}]")
        return wire

    @classmethod
    def from_wire(cls: type[M], data: Any) -> M:
        if not isinstance(data, Mapping):
            raise ProtocolError(f"{cls.__name__} header is not a map")
        version = data.get("v")
        if version != SCHEMA_VERSION:
            raise ProtocolError(f"unknown schema version {version!r} (this reader speaks {SCHEMA_VERSION})")
        values: dict[str, Any] = {}
        for name, check in cls.FIELDS.items():
            if name not in data:
                if name in cls.OPTIONAL:
                    continue
                raise ProtocolError(f"{cls.__name__} is missing field {name!r}")
            values[name] = check(name, data[name])
        return cls(**values)


@dataclass(slots=True, frozen=True)
class FrameHeader(_Message):
    """One 2-photon frame; the pixels travel in the next message part, raw and C-ordered."""

    seq: int
    t_acq_ns: int
    t_pub_ns: int
    shape: tuple[int, int]
    dtype: str
    channel: int = 0
    plane: int = 0
    session: str = ""

    FIELDS: ClassVar[dict[str, Checker]] = {
        "seq": _wire_int(),
        "t_acq_ns": _wire_int(),
        "t_pub_ns": _wire_int(),
        "shape": _shape,
        "dtype": _str(choices=FRAME_DTYPES),
        "channel": _int(0, 255),
        "plane": _int(0, 4095),
        "session": _str(),
    }
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"channel", "plane", "session"})


@dataclass(slots=True, frozen=True)
class Action(_Message):
    """The decoder's output for one frame.

    ``state`` is ``"filling"`` while the window is not yet full (after start or after a gap):
    then ``action`` is ``""``, ``index`` is -1 and ``probs`` is empty.
    ``dropped``: upstream frames missing from the sequence since the previous action;
    ``skipped``: frames the decoder received but did not decode (it keeps up with the newest).
    """

    seq: int
    t_acq_ns: int
    t_recv_ns: int
    t_done_ns: int
    t_pub_ns: int
    state: str
    action: str
    index: int
    probs: tuple[float, ...]
    confidence: float
    model_id: str
    dropped: int = 0
    skipped: int = 0
    session: str = ""

    FIELDS: ClassVar[dict[str, Checker]] = {
        "seq": _wire_int(),
        "t_acq_ns": _wire_int(),
        "t_recv_ns": _wire_int(),
        "t_done_ns": _wire_int(),
        "t_pub_ns": _wire_int(),
        "state": _str(choices=("filling", "decoding")),
        "action": _str(),
        "index": _int(-1, MAX_CLASSES),
        "probs": _float_list(),
        "confidence": _float(0.0, 1.0),
        "model_id": _str(),
        "dropped": _counter(),
        "skipped": _counter(),
        "session": _str(),
    }
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"dropped", "skipped", "session"})


@dataclass(slots=True, frozen=True)
class Event(_Message):
    """A debounced action onset or offset, what stimulus hardware usually triggers on."""

    kind: str
    action: str
    index: int
    seq: int
    t_acq_ns: int
    t_pub_ns: int
    confidence: float
    model_id: str
    duration_ns: int = 0
    session: str = ""

    FIELDS: ClassVar[dict[str, Checker]] = {
        "kind": _str(choices=("onset", "offset")),
        "action": _str(),
        "index": _int(0, MAX_CLASSES),
        "seq": _wire_int(),
        "t_acq_ns": _wire_int(),
        "t_pub_ns": _wire_int(),
        "confidence": _float(0.0, 1.0),
        "model_id": _str(),
        "duration_ns": _counter(),
        "session": _str(),
    }
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"duration_ns", "session"})


@dataclass(slots=True, frozen=True)
class Status(_Message):
    """Periodic heartbeat: a live decoder sends one every interval, a dead one does not."""

    t_ns: int
    state: str
    uptime_s: float
    model_id: str
    backend: str
    window: int
    window_fill: int
    counters: dict[str, int] = field(default_factory=dict)
    latency_us: dict[str, float] = field(default_factory=dict)
    session: str = ""

    FIELDS: ClassVar[dict[str, Checker]] = {
        "t_ns": _wire_int(),
        "state": _str(choices=("starting", "running", "paused", "stopping")),
        "uptime_s": _float(0.0),
        "model_id": _str(),
        "backend": _str(),
        "window": _int(0, 1_000_000),
        "window_fill": _int(0, 1_000_000),
        "counters": _map(_counter()),
        "latency_us": _map(_float(0.0)),
        "session": _str(),
    }
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"counters", "latency_us", "session"})


@dataclass(slots=True, frozen=True)
class ControlRequest(_Message):
    """A request on the control socket: status, ping, pause, resume, reload (args: bundle)."""

    id: int
    cmd: str
    args: dict[str, Any] = field(default_factory=dict)

    FIELDS: ClassVar[dict[str, Checker]] = {
        "id": _wire_int(),
        "cmd": _str(choices=("status", "ping", "pause", "resume", "reload")),
        "args": _map(_scalar),
    }
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"args"})


@dataclass(slots=True, frozen=True)
class ControlReply(_Message):
    """The answer to one ControlRequest, with the same id."""

    id: int
    ok: bool
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    FIELDS: ClassVar[dict[str, Checker]] = {
        "id": _wire_int(),
        "ok": _bool,
        "error": _optional(_str(4096)),
        "data": _map(_scalar),
    }
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"error", "data"})


PUBLISHED_TYPES: dict[bytes, type[Action] | type[Event] | type[Status]] = {
    TOPIC_ACTION: Action,
    TOPIC_EVENT: Event,
    TOPIC_STATUS: Status,
}
TOPIC_OF: dict[type, bytes] = {cls: topic for topic, cls in PUBLISHED_TYPES.items()}
