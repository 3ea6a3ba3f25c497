"""Round trips and rejections for every published and control message type."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import codec
from protocols.errors import ProtocolError
from protocols.messages import (
    saturating_add,
    sequence_step,
    SCHEMA_VERSION,
    WIRE_INT_MAX,
    WIRE_INT_MIN,
    Action,
    ControlReply,
    ControlRequest,
    Event,
    Status,
)

# The whole documented integer range (docs/wire-protocol.md, "Integers"), edges weighted in.
NS = st.one_of(
    st.integers(min_value=WIRE_INT_MIN, max_value=WIRE_INT_MAX),
    st.sampled_from([0, 1, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]),
)
NAME = st.text(max_size=32)
PROB = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)

actions = st.builds(
    Action,
    seq=NS, t_acq_ns=NS, t_recv_ns=NS, t_done_ns=NS, t_pub_ns=NS,
    state=st.sampled_from(["filling", "decoding"]),
    action=NAME, index=st.integers(-1, 20),
    probs=st.lists(PROB, max_size=10).map(tuple),
    confidence=PROB, model_id=NAME,
    dropped=NS, skipped=NS, session=NAME,
)
events = st.builds(
    Event,
    kind=st.sampled_from(["onset", "offset"]), action=NAME, index=st.integers(0, 20),
    seq=NS, t_acq_ns=NS, t_pub_ns=NS, confidence=PROB, model_id=NAME,
    duration_ns=NS, session=NAME,
)
statuses = st.builds(
    Status,
    t_ns=NS, state=st.sampled_from(["starting", "running", "paused", "stopping"]),
    uptime_s=st.floats(0, 1e9, allow_nan=False), model_id=NAME, backend=NAME,
    window=st.integers(0, 64), window_fill=st.integers(0, 64),
    counters=st.dictionaries(st.text(max_size=16), NS, max_size=8),
    latency_us=st.dictionaries(st.text(max_size=16), st.floats(0, 1e9, allow_nan=False), max_size=8),
)


@given(st.one_of(actions, events, statuses))
def test_published_messages_round_trip(message):
    assert codec.decode(codec.encode(message)) == message


@given(
    st.builds(
        ControlRequest,
        id=NS,
        cmd=st.sampled_from(["status", "ping", "pause", "resume", "reload"]),
        args=st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.integers(-5, 5), NAME), max_size=4),
    )
)
def test_control_request_round_trip(request_message):
    assert codec.decode_control_request(codec.encode_control(request_message)) == request_message


def test_control_reply_round_trip():
    reply = ControlReply(id=7, ok=False, error="bundle checksum mismatch", data={"x": [1, 2.5, "a"]})
    assert codec.decode_control_reply(codec.encode_control(reply)) == reply


def _valid_action_wire() -> dict:
    return Action(
        seq=5, t_acq_ns=10, t_recv_ns=11, t_done_ns=12, t_pub_ns=13, state="decoding",
        action="resting", index=2, probs=(0.2, 0.8), confidence=0.8, model_id="m",
    ).to_wire()


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda w: w.update(v=SCHEMA_VERSION + 1), "unknown schema version"),
        (lambda w: w.pop("v"), "unknown schema version"),
        (lambda w: w.pop("seq"), "missing field 'seq'"),
        (lambda w: w.update(seq=-1), "'seq'"),
        (lambda w: w.update(seq=True), "expected an integer"),
        (lambda w: w.update(seq=1.5), "expected an integer"),
        (lambda w: w.update(confidence=math.nan), "not finite"),
        (lambda w: w.update(probs=[0.5, math.inf]), "not finite"),
        (lambda w: w.update(confidence=1.5), "outside"),
        (lambda w: w.update(state="guessing"), "not one of"),
        (lambda w: w.update(model_id="x" * 1000), "longer than"),
        (lambda w: w.update(probs=[0.0] * 5000), "array longer"),
    ],
)
def test_action_rejections_name_the_problem(mutate, reason):
    wire = _valid_action_wire()
    mutate(wire)
    with pytest.raises(ProtocolError, match=reason) as info:
        codec.decode([b"action", msgpack.packb(wire)])
    assert reason.strip("'") in info.value.reason


@pytest.mark.parametrize(
    "parts",
    [
        [b"action"],
        [b"action", b"\xc1"],  # never-used msgpack byte
        [b"action", msgpack.packb([1, 2, 3])],
        [b"nonsense", msgpack.packb(_valid_action_wire())],
        [b"action", msgpack.packb(_valid_action_wire()), b"extra"],
        [b"action", b"\x00" * (70 * 1024)],
    ],
)
def test_malformed_published_messages_are_rejected(parts):
    with pytest.raises(ProtocolError):
        codec.decode(parts)


def test_unknown_extra_fields_are_ignored_within_a_version():
    wire = _valid_action_wire()
    wire["future_field"] = {"anything": 1}
    assert codec.decode([b"action", msgpack.packb(wire)]).seq == 5


def test_control_request_rejects_unknown_command():
    payload = msgpack.packb({"v": SCHEMA_VERSION, "id": 1, "cmd": "format_disk"})
    with pytest.raises(ProtocolError, match="not one of"):
        codec.decode_control_request(payload)


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=256), max_size=4))
def test_arbitrary_bytes_never_escape_as_anything_but_protocol_error(parts):
    for reader in (codec.decode, codec.decode_frame):
        try:
            reader(parts)
        except ProtocolError as exc:
            assert exc.reason  # every rejection says why


# --- the one integer range ------------------------------------------------------------------

BEYOND = st.one_of(st.integers(min_value=WIRE_INT_MAX + 1, max_value=2**200), st.just(WIRE_INT_MAX + 1))
BELOW = st.integers(min_value=-(2**200), max_value=-1)


def _action(**overrides):
    values = dict(
        seq=5, t_acq_ns=10, t_recv_ns=11, t_done_ns=12, t_pub_ns=13, state="decoding",
        action="resting", index=2, probs=(0.2, 0.8), confidence=0.8, model_id="m",
    )
    values.update(overrides)
    return Action(**values)


def test_the_range_is_msgpacks_unsigned_64_bit_family():
    assert (WIRE_INT_MIN, WIRE_INT_MAX) == (0, 2**64 - 1)


@given(dropped=st.one_of(NS, BEYOND), skipped=st.one_of(NS, BEYOND, BELOW))
def test_action_counters_saturate_instead_of_overflowing(dropped, skipped):
    # On main, dropped=2**64 (one jump 0 -> 2**64-1 plus one more frame) raised OverflowError in
    # msgpack and the heartbeat/publish task took the daemon down.
    decoded = codec.decode(codec.encode(_action(dropped=dropped, skipped=skipped)))
    assert decoded.dropped == min(dropped, WIRE_INT_MAX)
    assert decoded.skipped == min(max(skipped, 0), WIRE_INT_MAX)


@given(counters=st.dictionaries(st.text(max_size=16), st.one_of(NS, BEYOND), max_size=8))
def test_status_counters_saturate_and_every_reader_accepts_them(counters):
    status = Status(
        t_ns=2**64 - 1, state="running", uptime_s=1.0, model_id="m", backend="onnxruntime",
        window=4, window_fill=4, counters=counters,
    )
    decoded = codec.decode(codec.encode(status))
    assert decoded.counters == {k: min(v, WIRE_INT_MAX) for k, v in counters.items()}


@given(duration=st.one_of(NS, BEYOND, BELOW))
def test_event_durations_saturate(duration):
    # A publisher whose clock restarts makes offset - onset negative; it goes out as 0.
    event = Event(kind="offset", action="a", index=0, seq=1, t_acq_ns=2, t_pub_ns=3, confidence=0.5,
                  model_id="m", duration_ns=duration)
    assert codec.decode(codec.encode(event)).duration_ns == min(max(duration, 0), WIRE_INT_MAX)


@pytest.mark.parametrize("name", ["seq", "t_acq_ns", "t_recv_ns", "t_done_ns", "t_pub_ns"])
@given(value=st.one_of(BEYOND, BELOW))
def test_writers_refuse_identity_fields_outside_the_range(name, value):
    with pytest.raises(ProtocolError, match=name):
        codec.encode(_action(**{name: value}))


@pytest.mark.parametrize(
    ("message_type", "build"),
    [
        (Action, lambda n, v: _action(**{n: v}).to_wire()),
        (Event, lambda n, v: {**Event(kind="onset", action="a", index=0, seq=1, t_acq_ns=2, t_pub_ns=3,
                                      confidence=0.5, model_id="m").to_wire(), n: v}),
    ],
)
@given(value=NS, over=BEYOND)
def test_readers_accept_exactly_the_range(message_type, build, value, over):
    topic = codec.TOPIC_OF[message_type]
    for name in ("seq", "t_acq_ns", "t_pub_ns"):
        assert getattr(codec.decode([topic, msgpack.packb(build(name, 0) | {name: value})]), name) == value
        # msgpack itself cannot carry more than 64 bits; the largest it can, 2**64 - 1, is the top.
        assert over > WIRE_INT_MAX


def test_reader_refuses_negative_timestamps_and_counters():
    for name in ("t_acq_ns", "dropped", "skipped"):
        with pytest.raises(ProtocolError, match=name):
            codec.decode([b"action", msgpack.packb(_action().to_wire() | {name: -1})])


def test_a_timestamp_above_int64_is_accepted():
    # On main the reader refused t_acq_ns = 2**63 although seq went up to 2**64 - 1.
    wire = _action().to_wire() | {"t_acq_ns": 2**63, "seq": 2**64 - 1}
    decoded = codec.decode([b"action", msgpack.packb(wire)])
    assert (decoded.t_acq_ns, decoded.seq) == (2**63, 2**64 - 1)


@given(total=NS, n=st.one_of(NS, BEYOND))
def test_saturating_add_stays_in_range(total, n):
    assert saturating_add(total, n) == min(total + n, WIRE_INT_MAX)


@given(last=st.one_of(st.none(), NS), seq=NS)
def test_sequence_step_counts_gaps_and_restarts(last, seq):
    lost, restarted = sequence_step(last, seq)
    if last is None:
        assert (lost, restarted) == (0, False)
    elif seq > last:
        assert (lost, restarted) == (seq - last - 1, False)
    else:
        assert (lost, restarted) == (0, True)
    assert 0 <= lost < WIRE_INT_MAX


def test_hostile_sequence_saturates_a_counter():
    frames_lost, last = 0, None
    for seq in [0, 2**64 - 1, 0, 2**64 - 1, 0, 2**64 - 1]:
        lost, _ = sequence_step(last, seq)
        frames_lost = saturating_add(frames_lost, lost)
        last = seq
    assert frames_lost == WIRE_INT_MAX
    status = Status(t_ns=1, state="running", uptime_s=1.0, model_id="m", backend="b", window=1,
                    window_fill=1, counters={"frames_lost": frames_lost})
    assert codec.decode(codec.encode(status)).counters["frames_lost"] == WIRE_INT_MAX


# --- refusals echo the request id -----------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"v": SCHEMA_VERSION, "id": 42, "cmd": "format_disk"},
        {"v": SCHEMA_VERSION, "id": 42, "cmd": "reload", "args": [1, 2]},
        {"v": SCHEMA_VERSION + 1, "id": 42, "cmd": "ping"},
        {"v": SCHEMA_VERSION, "id": 42},
    ],
)
def test_a_refused_request_with_a_valid_id_carries_it(payload):
    raw = msgpack.packb(payload)
    with pytest.raises(ProtocolError) as info:
        codec.decode_control_request(raw)
    assert info.value.request_id == 42
    reply = codec.refusal_reply(info.value)
    assert (reply.id, reply.ok) == (42, False) and "malformed request" in reply.error
    assert codec.decode_control_reply(codec.encode_control(reply)) == reply


@pytest.mark.parametrize(
    "raw",
    [b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"v": 1, "id": -3, "cmd": "ping"}),
     msgpack.packb({"v": 1, "id": "7", "cmd": "ping"}), msgpack.packb({"v": 1, "cmd": "ping"})],
)
def test_a_refused_request_without_a_valid_id_is_answered_with_id_zero(raw):
    with pytest.raises(ProtocolError) as info:
        codec.decode_control_request(raw)
    assert info.value.request_id is None
    assert codec.refusal_reply(info.value).id == 0
