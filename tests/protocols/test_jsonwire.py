"""The JSON mirror's encoding: same fields as msgpack, always valid JSON, strict reading."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import codec
from protocols.errors import ProtocolError
from protocols.jsonwire import MAX_JSON_BYTES, decode_json, encode_json, to_json
from protocols.messages import WIRE_INT_MAX, WIRE_INT_MIN, Action, Event, Status

NS = st.one_of(
    st.integers(min_value=WIRE_INT_MIN, max_value=WIRE_INT_MAX),
    st.sampled_from([0, 2**53 + 1, 2**64 - 1]),
)
NAME = st.text(max_size=32)  # any Unicode but lone surrogates, as msgpack strings
PROB = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)

messages = st.one_of(
    st.builds(
        Action, seq=NS, t_acq_ns=NS, t_recv_ns=NS, t_done_ns=NS, t_pub_ns=NS,
        state=st.sampled_from(["filling", "decoding"]), action=NAME, index=st.integers(-1, 20),
        probs=st.lists(PROB, max_size=10).map(tuple), confidence=PROB, model_id=NAME,
        dropped=NS, skipped=NS, session=NAME,
    ),
    st.builds(
        Event, kind=st.sampled_from(["onset", "offset"]), action=NAME, index=st.integers(0, 20),
        seq=NS, t_acq_ns=NS, t_pub_ns=NS, confidence=PROB, model_id=NAME, duration_ns=NS, session=NAME,
    ),
    st.builds(
        Status, t_ns=NS, state=st.sampled_from(["starting", "running", "paused", "stopping"]),
        uptime_s=st.floats(0, 1e9, allow_nan=False), model_id=NAME, backend=NAME,
        window=st.integers(0, 64), window_fill=st.integers(0, 64),
        counters=st.dictionaries(st.text(max_size=16), NS, max_size=8),
        latency_us=st.dictionaries(st.text(max_size=16), st.floats(0, 1e9, allow_nan=False), max_size=8),
        session=NAME,
    ),
)


def strict_loads(payload: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"invalid JSON token {name}")

    return json.loads(payload.decode("ascii"), parse_constant=refuse)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_json_parts_hold_exactly_the_msgpack_fields(message: Any) -> None:
    topic, payload = encode_json(message)
    packed_topic, packed = codec.encode(message)
    assert topic == packed_topic
    assert strict_loads(payload) == codec.decode([packed_topic, packed]).to_wire()  # ASCII, same map
    assert decode_json([topic, payload]) == message


def action(**changes: Any) -> Action:
    fields = dict(seq=3, t_acq_ns=10, t_recv_ns=11, t_done_ns=12, t_pub_ns=13, state="decoding", action="groom",
                  index=1, probs=(0.25, 0.75), confidence=0.75, model_id="m", session="rig-2 µ")
    return Action(**{**fields, **changes})


def test_non_ascii_is_escaped_and_comes_back() -> None:
    topic, payload = encode_json(action())
    assert b"\\u00b5" in payload
    assert decode_json([topic, payload]).session == "rig-2 µ"


def test_nan_and_infinity_become_null_never_invalid_json() -> None:
    # A message built around the validation (only a bug could do this) still makes valid JSON.
    topic, payload = encode_json(action(probs=(math.nan, math.inf), confidence=-math.inf))
    data = strict_loads(payload)
    assert data["probs"] == [None, None] and data["confidence"] is None
    with pytest.raises(ProtocolError, match="probs"):
        decode_json([topic, payload])  # a reader refuses it, as it refuses NaN in msgpack


def test_bytes_and_numpy_values_become_json() -> None:
    import numpy as np

    data = strict_loads(to_json({"name": b"gr\xffom", "x": np.float32(0.5), "n": np.int64(7),
                                 "nested": {"f": np.float64("nan")}}))
    assert data == {"name": "gr\\xffom", "x": 0.5, "n": 7, "nested": {"f": None}}


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ([b"action"], "2 parts"),
        ([b"frame", b"{}"], "unknown topic"),
        ([b"action", b"{not json"], "not valid UTF-8 JSON"),
        ([b"action", b"\xff\xfe"], "not valid UTF-8 JSON"),
        ([b"action", b"[" * 100_000], "not valid UTF-8 JSON"),
        ([b"event", b'{"v": 1, "confidence": NaN}'], "NaN"),
        ([b"event", b"[]"], "not a map"),
        ([b"status", b'{"v": 2}'], "schema version"),
        ([b"event", b" " * (MAX_JSON_BYTES + 1)], "limit"),
    ],
)
def test_bad_mirror_messages_are_refused_with_a_reason(parts: list[bytes], reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_json(parts)
