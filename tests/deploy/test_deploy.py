"""deploy/: the systemd unit verifies and is hardened, the example config loads, the installer
installs into a throw-away prefix (slow: a real virtualenv) and runs dry."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from decoder.settings import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "actionloop-decoder.service"
MAX_EXPOSURE = 3.0  # systemd-analyze security: "OK" and below
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed here (.ci/run installs the systemd package)",
)


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


def _unit_here(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart at this interpreter (as install.sh points it at its virtualenv),
    under its own name: systemd-analyze takes the unit type from the file name."""
    unit = tmp_path / UNIT.name
    unit.write_text((text or UNIT.read_text()).replace("/opt/actionloop/venv/bin/python", sys.executable))
    return unit


def _verify(unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def _exposure(unit: Path) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def _realtime_variant() -> str:
    """The unit with its commented real-time options switched on, as its comments say to."""
    text = UNIT.read_text()
    options = ("CPUAffinity=2 3", "CPUSchedulingPolicy=fifo", "CPUSchedulingPriority=50", "LimitRTPRIO=50")
    for option in options:
        assert f"#      {option}\n" in text, f"the unit no longer documents {option}"
    service, install = text.split("[Install]")
    return service + "\n".join(options) + "\n\n[Install]" + install


@needs_systemd_analyze
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    _verify(_unit_here(tmp_path))


@needs_systemd_analyze
def test_unit_exposure_is_ok(tmp_path: Path) -> None:
    # On main: 5.8 MEDIUM.
    assert _exposure(_unit_here(tmp_path)) <= MAX_EXPOSURE


@needs_systemd_analyze
def test_unit_with_realtime_scheduling_verifies_and_stays_ok(tmp_path: Path) -> None:
    unit = _unit_here(tmp_path, _realtime_variant())
    _verify(unit)
    assert _exposure(unit) <= MAX_EXPOSURE


def test_hardening_keeps_the_gpu_the_decision_log_and_realtime() -> None:
    s = _unit_settings()
    # GPU: device nodes fenced, not hidden; JIT compilers need writable+executable memory.
    assert s["DevicePolicy"] == ["closed"]
    assert {"char-nvidia-frontend rw", "char-nvidia-uvm rw", "char-nvidia-caps rw"} <= set(s["DeviceAllow"])
    assert "MemoryDenyWriteExecute" not in s and "PrivateDevices" not in s and "ProcSubset" not in s
    # Decision log: its directory stays writable and group-readable.
    assert s["LogsDirectory"] == ["actionloop"] and s["UMask"] == ["0027"]
    # Real time: not restricted, and the system calls that set it (@resources) are not filtered.
    assert "RestrictRealtime" not in s
    assert not any("@resources" in f for f in s["SystemCallFilter"] if f.startswith("~"))
    assert s["CapabilityBoundingSet"] == [""] and s["SystemCallErrorNumber"] == ["EPERM"]
    # Loopback by default, as the example config binds 127.0.0.1.
    assert s["IPAddressDeny"] == ["any"] and s["IPAddressAllow"] == ["localhost"]


def test_example_config_loads() -> None:
    settings = load_settings(DEPLOY / "decoder.toml")
    assert settings.decision_log.path == Path("/var/log/actionloop/decisions.msgpack")
    assert settings.sockets.actions.startswith("tcp://127.0.0.1:")
    assert settings.metrics.enabled is False and settings.metrics.host == "127.0.0.1"  # shown, off


@pytest.mark.slow
def test_install_script_installs_into_a_temporary_prefix(tmp_path: Path) -> None:
    """The whole installer, for real, staged under DESTDIR: a virtualenv with torch and the
    project, the config and the unit (verified by the script with systemd-analyze where it is
    installed). On main it stopped at `systemd-analyze verify` on a file without a .service
    name, after the virtualenv and config steps."""
    stage = tmp_path / "stage"
    result = subprocess.run(
        ["bash", str(DEPLOY / "install.sh")], capture_output=True, text=True, timeout=900,
        env={**os.environ, "DESTDIR": str(stage)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    venv_python = stage / "opt/actionloop/venv/bin/python"
    unit = stage / "etc/systemd/system" / UNIT.name
    config = stage / "etc/actionloop/decoder.toml"
    assert venv_python.exists() and config.read_text() == (DEPLOY / "decoder.toml").read_text()
    assert (stage / "opt/actionloop/docs/daemon.md").is_file()
    # The unit names where it will run, not the staging directory.
    assert "ExecStart=/opt/actionloop/venv/bin/python -m decoder --config /etc/actionloop/decoder.toml" in unit.read_text()
    assert str(stage) not in unit.read_text()
    if shutil.which("systemd-analyze") is not None:
        assert "+ systemd-analyze verify actionloop-decoder.service" in result.stdout
        staged = tmp_path / "verify" / UNIT.name
        staged.parent.mkdir()
        staged.write_text(unit.read_text().replace("/opt/actionloop/venv/bin/python", str(venv_python)))
        _verify(staged)
    # The installed daemon and command line start (and the daemon refuses the missing bundle
    # with EX_CONFIG, as it would before a bundle is put in place).
    help_text = subprocess.run([str(venv_python), "-m", "decoder", "--help"], capture_output=True, text=True,
                               timeout=120, cwd=tmp_path)
    assert help_text.returncode == 0 and "--config" in help_text.stdout, help_text.stderr
    refused = subprocess.run([str(venv_python), "-m", "decoder", "--config", str(config)], capture_output=True,
                             text=True, timeout=120, cwd=tmp_path,
                             env={**os.environ, "ACTIONLOOP_MODEL__BUNDLE": str(tmp_path / "no-bundle")})
    assert refused.returncode == 78, refused.stderr[-2000:]
    # A second run keeps the (possibly edited) config.
    config.write_text(config.read_text() + "# edited on the rig\n")
    again = subprocess.run(["bash", str(DEPLOY / "install.sh")], capture_output=True, text=True, timeout=900,
                           env={**os.environ, "DESTDIR": str(stage)})
    assert again.returncode == 0, again.stderr[-3000:]
    assert "keeping existing" in again.stdout and config.read_text().endswith("# edited on the rig\n")


def test_install_script_refuses_a_relative_prefix(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(DEPLOY / "install.sh")], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "DRY_RUN": "1", "PREFIX": "opt/actionloop"})
    assert result.returncode == 1 and "PREFIX must be an absolute path" in result.stderr


def test_install_script_staged_dry_run(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(DEPLOY / "install.sh")], capture_output=True, text=True, timeout=60,
        env={**os.environ, "DRY_RUN": "1", "DESTDIR": str(tmp_path / "stage")},
    )
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path}/stage/opt/actionloop/venv/bin/python -m pip install" in result.stdout
    assert f"{tmp_path}/stage/etc/systemd/system/actionloop-decoder.service" in result.stdout
    assert "useradd" not in result.stdout and "daemon-reload" not in result.stdout


@needs_systemd_analyze
def test_install_script_points_the_unit_at_its_prefix_and_config(tmp_path: Path) -> None:
    """Everything but the virtualenv, for real: a stand-in interpreter whose `-m venv` makes a
    virtualenv that links this one's Python, and `pip` steps that do nothing (the slow test
    installs for real)."""
    fake = tmp_path / "fake-python"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ "$1 $2" == "-m venv" ]]; then mkdir -p "$3/bin"; printf \'#!/usr/bin/env bash\\nexit 0\\n\' > "$3/bin/python"; '
        'chmod +x "$3/bin/python"; exit 0; fi\n'
        "exit 1\n"
    )
    fake.chmod(0o755)
    stage = tmp_path / "stage"
    result = subprocess.run(
        ["bash", str(DEPLOY / "install.sh")], capture_output=True, text=True, timeout=120,
        env={**os.environ, "DESTDIR": str(stage), "PYTHON": str(fake), "PREFIX": "/srv/al", "CONFIG_DIR": "/etc/al"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    unit = (stage / "etc/systemd/system" / UNIT.name).read_text()
    assert "ExecStart=/srv/al/venv/bin/python -m decoder --config /etc/al/decoder.toml" in unit
    assert "EnvironmentFile=-/etc/al/decoder.env" in unit and "Documentation=file:///srv/al/docs/daemon.md" in unit
    assert (stage / "etc/al/decoder.toml").is_file()
    assert "+ systemd-analyze verify actionloop-decoder.service" in result.stdout  # verified, under its own name


def test_install_script_dry_run(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(DEPLOY / "install.sh")], capture_output=True, text=True, timeout=60,
        env={**os.environ, "DRY_RUN": "1", "PREFIX": str(tmp_path / "prefix")},
    )
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path}/prefix/venv/bin/python -m pip install" in result.stdout
    assert "/etc/systemd/system/actionloop-decoder.service" in result.stdout
    assert not (tmp_path / "prefix").exists(), "a dry run must not change anything"
