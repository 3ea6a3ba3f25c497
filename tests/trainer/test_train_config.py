from __future__ import annotations

from pathlib import Path

import pytest

from trainer.config import ConfigError, load_config, parse_overrides


def test_presets_and_overrides() -> None:
    tiny = load_config("tiny")
    assert tiny.model.channels == [8, 16, 32] and tiny.optim.epochs == 4
    assert load_config("bench").model.window == 8
    cfg = load_config("tiny", ["optim.lr=3e-4", "method=simclr", "augment.neural.calcium=false",
                               "model.channels=[4, 8]", "data.exclude_animals=['fly3']"])
    assert cfg.optim.lr == 3e-4 and cfg.method == "simclr" and cfg.augment.neural.calcium is False
    assert cfg.model.channels == [4, 8] and cfg.data.exclude_animals == ["fly3"]
    assert cfg.optim.batch_size == 64  # untouched preset value survives
    assert parse_overrides(["a.b=1", "a.c=x y"]) == {"a": {"b": 1, "c": "x y"}}


def test_toml_file_with_preset(tmp_path: Path) -> None:
    f = tmp_path / "run.toml"
    f.write_text('preset = "tiny"\nmethod = "regression"\n[optim]\nepochs = 7\n[augment.pose]\njoint_dropout = 0.0\n')
    cfg = load_config(f, ["optim.epochs=9"])
    assert cfg.method == "regression" and cfg.optim.epochs == 9
    assert cfg.augment.pose.joint_dropout == 0.0 and cfg.model.features == 32


@pytest.mark.parametrize(
    ("source", "overrides", "message"),
    [
        ("tiny", ["optim.lr=-1"], "optim.lr"),
        ("tiny", ["method=magic"], "method"),
        ("tiny", ["optim.bogus=1"], "optim.bogus"),
        ("tiny", ["noequals"], "key=value"),
        ("tiny", ["swap.probability=2"], "swap.probability"),
        ("tiny", ["data.animals=['a']", "data.exclude_animals=['a']"], "both selected and excluded"),
        ("nope", [], "neither a preset"),
    ],
)
def test_bad_configs_name_the_key(source: str, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(source, overrides)


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("method = \n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(f)
