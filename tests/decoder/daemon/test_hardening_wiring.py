"""Findings of the hardening review whose last step is a call in the service
(decoder/service.py, decoder/control.py): refusals carry the request's id, status says which
backend runs and why, reload honours the allow-list of bundle directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio

from protocols.client import ControlError
from protocols.codec import decode_control_reply
from protocols.messages import SCHEMA_VERSION


async def test_a_refused_request_is_answered_with_its_own_id(
    start_service: Any, daemon_bundle: Path, actx: zmq.asyncio.Context
) -> None:
    h = await start_service(daemon_bundle)
    raw = actx.socket(zmq.DEALER)
    raw.linger = 0
    raw.connect(h.service.endpoints["control"])
    try:
        await raw.send_multipart([b"", msgpack.packb({"v": SCHEMA_VERSION, "id": 42, "cmd": "halt"})])
        assert await raw.poll(5000), "no reply"
        reply = decode_control_reply((await raw.recv_multipart())[-1])
    finally:
        raw.close(0)
    assert not reply.ok and "not one of" in (reply.error or "")
    assert reply.id == 42


async def test_status_says_which_backend_runs_and_why(start_service: Any, daemon_bundle: Path) -> None:
    h = await start_service(daemon_bundle)
    status = (await h.control.request("status")).data
    assert status["backend_choice"]["name"] == "onnxruntime"
    assert status["backend_choice"]["reason"]


async def test_reload_outside_the_allowed_directories_is_refused(
    start_service: Any, daemon_bundle: Path, variant_bundle: Path, tmp_path: Path
) -> None:
    allowed = tmp_path / "models"
    allowed.mkdir()
    h = await start_service(daemon_bundle, model={"reload_allowed_dirs": [str(allowed)]})
    with pytest.raises(ControlError, match="reload_allowed_dirs"):
        await h.control.request("reload", timeout=30, bundle=str(variant_bundle))
