"""The settings tree: defaults, environment, TOML file, priorities and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from decoder.settings import SettingsError, load_settings


def test_defaults_bind_to_loopback_only() -> None:
    s = load_settings()
    for endpoint in (s.sockets.frames, s.sockets.actions, s.sockets.control):
        assert endpoint.startswith("tcp://127.0.0.1:")
    assert (s.sockets.frames, s.sockets.actions, s.sockets.control) == (
        "tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556", "tcp://127.0.0.1:5557",
    )
    assert s.policy.heartbeat_interval_s == 1.0
    assert s.backend.name == "auto" and s.security.curve is False
    assert s.model.bundle is None


def test_environment_uses_prefix_and_nested_delimiter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIONLOOP_SOCKETS__FRAMES", "tcp://10.0.0.2:6000")
    monkeypatch.setenv("ACTIONLOOP_POLICY__MIN_CONFIDENCE", "0.8")
    monkeypatch.setenv("ACTIONLOOP_MODEL__BUNDLE", "/srv/models/m1")
    s = load_settings()
    assert s.sockets.frames == "tcp://10.0.0.2:6000"
    assert s.policy.min_confidence == 0.8
    assert s.model.bundle == Path("/srv/models/m1")


def test_toml_file_then_environment_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "decoder.toml"
    config.write_text(
        '[sockets]\nframes = "tcp://127.0.0.1:7000"\nframes_mode = "bind"\n'
        "[policy]\nmin_confidence = 0.7\nmax_gap_frames = 9\n"
        '[backend]\nname = "onnxruntime"\nthreads = 2\n'
    )
    s = load_settings(config)
    assert s.sockets.frames == "tcp://127.0.0.1:7000" and s.sockets.frames_mode == "bind"
    assert (s.policy.min_confidence, s.policy.max_gap_frames) == (0.7, 9)
    assert (s.backend.name, s.backend.threads) == ("onnxruntime", 2)
    monkeypatch.setenv("ACTIONLOOP_POLICY__MIN_CONFIDENCE", "0.9")
    s = load_settings(config)
    assert s.policy.min_confidence == 0.9 and s.policy.max_gap_frames == 9  # env wins, file fills in
    s = load_settings(config, policy={"min_confidence": 0.5})
    assert s.policy.min_confidence == 0.5


@pytest.mark.parametrize(
    "text, message",
    [
        ("[policy]\nmin_confidenc = 0.5\n", r"policy\.min_confidenc: Extra inputs are not permitted"),
        ("[policy]\nmin_confidence = 1.5\n", r"policy\.min_confidence: Input should be less than or equal to 1"),
        ('[backend]\nname = "tflite"\n', r"backend\.name"),
        ('[sockets]\nframes_mode = "listen"\n', r"sockets\.frames_mode"),
        ("[security]\ncurve = true\n", "curve = true needs server_secret_key and authorized_clients_dir"),
        ("[policy\nmin_confidence = 0.5\n", "is not valid TOML"),
        ("[unknown_section]\nx = 1\n", "unknown_section: Extra inputs are not permitted"),
    ],
)
def test_bad_config_files_name_the_key_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=message) as info:
        load_settings(config)
    assert str(config) in str(info.value)


def test_a_typo_in_an_environment_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIONLOOP_POLICY__MIN_CONFIDANCE", "0.5")
    with pytest.raises(SettingsError, match="policy.min_confidance"):
        load_settings()


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(Exception, match="frozen"):
        s.policy.min_confidence = 0.1  # type: ignore[misc]
