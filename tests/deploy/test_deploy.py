"""deploy/: the systemd unit verifies, the example config loads, the installer runs dry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from decoder.settings import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "actionloop-decoder.service"


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_has_the_required_service_settings() -> None:
    s = _unit_settings()
    assert s["Type"] == ["notify"]
    assert s["Restart"] == ["on-failure"]
    assert s["WatchdogSec"] and float(s["WatchdogSec"][0]) > 0
    assert s["User"] == ["actionloop"]
    assert s["ProtectSystem"] == ["strict"] and s["NoNewPrivileges"] == ["yes"]
    assert s["RestartPreventExitStatus"] == ["78"]  # decoder.cli.EX_CONFIG
    assert {"LogsDirectory", "CacheDirectory", "StateDirectory"} <= s.keys()  # the writable paths
    assert "PrivateDevices" not in s, "PrivateDevices=yes would hide /dev/nvidia*"
    assert "-m decoder --config /etc/actionloop/decoder.toml" in s["ExecStart"][0]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    # Point ExecStart at this interpreter, as install.sh points it at its virtualenv.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/actionloop/venv/bin/python", sys.executable))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_example_config_loads() -> None:
    settings = load_settings(DEPLOY / "decoder.toml")
    assert settings.decision_log.path == Path("/var/log/actionloop/decisions.msgpack")
    assert settings.sockets.actions.startswith("tcp://127.0.0.1:")


def test_install_script_dry_run(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(DEPLOY / "install.sh")], capture_output=True, text=True, timeout=60,
        env={**os.environ, "DRY_RUN": "1", "PREFIX": str(tmp_path / "prefix")},
    )
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path}/prefix/venv/bin/python -m pip install" in result.stdout
    assert "/etc/systemd/system/actionloop-decoder.service" in result.stdout
    assert not (tmp_path / "prefix").exists(), "a dry run must not change anything"
