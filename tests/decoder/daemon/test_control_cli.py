"""`actionloop control` against the real in-process daemon, and its errors without one."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from protocols.bundle import load_bundle
from tools import control_cli


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    control_cli.configure(parser)
    return parser.parse_args(list(argv))


async def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await asyncio.to_thread(control_cli.run, _args(*argv), out)  # blocking client, off the loop
    return code, out.getvalue()


async def test_status_ping_pause_resume_reload(
    start_service: Any, daemon_bundle: Path, variant_bundle: Path, corrupt_bundle: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    h = await start_service(daemon_bundle)
    endpoint = h.service.endpoints["control"]
    code, text = await _run("status", "--endpoint", endpoint)
    assert code == 0 and "state: running" in text and "backend: onnxruntime" in text
    code, text = await _run("ping", "--endpoint", endpoint)
    assert code == 0 and text.startswith("pong") and "round trip" in text
    code, text = await _run("pause", "--endpoint", endpoint, "--json")
    assert code == 0 and json.loads(text)["state"] == "paused"
    code, text = await _run("resume", "--endpoint", endpoint, "--json")
    assert code == 0 and json.loads(text)["state"] == "running"
    code, text = await _run("reload", str(variant_bundle), "--endpoint", endpoint, "--json")
    assert code == 0 and json.loads(text)["model_id"] == load_bundle(variant_bundle).model_id
    code, _ = await _run("reload", str(corrupt_bundle), "--endpoint", endpoint)
    assert code == 1 and "checksum mismatch" in capsys.readouterr().err


async def test_endpoint_comes_from_the_settings_file(start_service: Any, daemon_bundle: Path, tmp_path: Path) -> None:
    h = await start_service(daemon_bundle)
    config = tmp_path / "decoder.toml"
    config.write_text(f'[sockets]\ncontrol = "{h.service.endpoints["control"]}"\n')
    code, text = await _run("ping", "--config", str(config))
    assert code == 0 and text.startswith("pong")


def test_no_daemon_is_a_timeout_not_a_hang(capsys: pytest.CaptureFixture[str]) -> None:
    code = control_cli.run(_args("status", "--endpoint", "tcp://127.0.0.1:9", "--timeout", "0.3"), io.StringIO())
    assert code == 2 and "no answer" in capsys.readouterr().err


def test_reload_without_a_bundle_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert control_cli.run(_args("reload", "--endpoint", "tcp://127.0.0.1:9"), io.StringIO()) == 2
    assert "needs the bundle" in capsys.readouterr().err
