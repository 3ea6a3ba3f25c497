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
    SCHEMA_VERSION,
    Action,
    ControlReply,
    ControlRequest,
    Event,
    Status,
)

NS = st.integers(min_value=0, max_value=2**63 - 1)
NAME = st.text(max_size=32)
PROB = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)

actions = st.builds(
    Action,
    seq=NS, t_acq_ns=NS, t_recv_ns=NS, t_done_ns=NS, t_pub_ns=NS,
    state=st.sampled_from(["filling", "decoding"]),
    action=NAME, index=st.integers(-1, 20),
    probs=st.lists(PROB, max_size=10).map(tuple),
    confidence=PROB, model_id=NAME,
    dropped=st.integers(0, 10**9), skipped=st.integers(0, 10**9), session=NAME,
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
    counters=st.dictionaries(st.text(max_size=16), st.integers(0, 10**12), max_size=8),
    latency_us=st.dictionaries(st.text(max_size=16), st.floats(0, 1e9, allow_nan=False), max_size=8),
)


@given(st.one_of(actions, events, statuses))
def test_published_messages_round_trip(message):
    assert codec.decode(codec.encode(message)) == message


@given(
    st.builds(
        ControlRequest,
        id=st.integers(0, 2**32),
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
