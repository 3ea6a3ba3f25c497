"""The `actionloop` command: every listed subcommand exists, has its own help, and logging is set once."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import structlog

from tools import cli


def test_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "tools.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for name in cli.COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_module_has_configure_and_run(name):
    module = importlib.import_module(cli.COMMANDS[name][0])
    assert callable(module.configure) and callable(module.run)


def test_command_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["simulate", "--help"])
    assert info.value.code == 0
    assert "--preset" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_logging_follows_a_replaced_stderr(capsys):
    """Loggers must not keep a stale stderr (test runners and daemonisers replace it)."""
    from protocols.logconfig import configure_logging

    configure_logging(level="info", fmt="json")
    structlog.get_logger("t").info("first", n=1)
    assert '"event": "first"' in capsys.readouterr().err
    structlog.get_logger("t").info("second", n=2)
    assert '"event": "second"' in capsys.readouterr().err


def test_bad_log_level_is_named():
    from protocols.logconfig import configure_logging

    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging(level="loud")
