"""`actionloop evaluate` end to end on a small dataset and a checkpoint in the contract format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tools.cli import main
from trainer.models import build_model

MODEL_ARGS = {"frame_shape": [32, 32], "window": 4, "pooled_size": 16, "channels": [4, 8], "features": 8,
              "temporal_channels": 8, "embedding_dim": 6}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("neural_conv", **MODEL_ARGS)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    torch.save({"model_name": "neural_conv", "model_args": model.model_args, "state_dict": model.state_dict(),
                "config": {"method": "ours"}, "metrics": {"epochs": 1, "history": [{"loss": 1.0}]}}, path)
    return path


def test_evaluate_writes_report_tables_and_figures(tmp_path: Path, checkpoint: Path, trainer_dataset: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    rc = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(trainer_dataset), "--out", str(out),
               "--seeds", "0", "--projection", "pca", "--no-progress"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "confusion_ours.png", "embedding_ours.png", "report.json", "report.md"]
    report = json.loads((out / "report.json").read_text())
    assert set(report["methods"]) == {"ours", "raw_linear"}
    summary = report["methods"]["ours"]["summary"]["accuracy"]
    assert set(summary) == {"single_animal", "multi_animal", "identity"}
    assert summary["multi_animal"]["1.0"]["n"] == 3  # one score per held-out animal
    # Raw frames of the synthetic animals differ in gain/offset/shift: identity is easy.
    assert report["methods"]["raw_linear"]["summary"]["accuracy"]["identity"]["1.0"]["mean"] > 90
    assert report["checkpoint_metrics"] == {"epochs": 1}
    assert "Table 1" in capsys.readouterr().out


def test_evaluate_refuses_a_broken_checkpoint_and_writes_nothing(tmp_path: Path, trainer_dataset: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 10)
    out = tmp_path / "eval"
    rc = main(["evaluate", "--checkpoint", str(bad), "--data", str(trainer_dataset), "--out", str(out), "--no-progress"])
    assert rc == 1
    assert not out.exists()


def test_evaluate_refuses_a_missing_dataset(tmp_path: Path, checkpoint: Path) -> None:
    rc = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "none"),
               "--out", str(tmp_path / "eval"), "--no-progress"])
    assert rc == 1
