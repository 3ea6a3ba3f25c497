"""`actionloop bench-train` end to end with tiny settings (slow: trains five entries at two
training seeds and CEBRA)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.cli import main

ISSUE_KEYS = {"dataset", "chance", "multi_animal", "single_animal", "identity", "spread",
              "train_throughput_windows_per_s"}
METHODS = {"raw_linear", "raw_linear_aligned", "contrastive_noswap", "contrastive_noswap_no_cross_animal",
           "contrastive_noswap_no_animal_norm", "contrastive_noswap_no_augment", "contrastive_noswap_no_online_centring",
           "ours", "cebra", "cebra_noncausal"}
TRAINED_CONTRASTIVE = {"contrastive_noswap", "contrastive_noswap_no_cross_animal", "contrastive_noswap_no_animal_norm",
                       "contrastive_noswap_no_augment", "ours"}


@pytest.mark.slow
@pytest.mark.timeout(900)  # ten trainings and two CEBRA fits: minutes on a shared 2-core machine
def test_bench_train_writes_the_issue_shape(tmp_path: Path, trainer_dataset: Path, fast_overrides: list[str]) -> None:
    out = tmp_path / "bench" / "train.json"
    sets = [a for o in fast_overrides for a in ("--set", o)]
    rc = main(["bench-train", "--preset", "tiny", "--data", str(trainer_dataset), "--out", str(out),
               "--work", str(tmp_path / "runs"), "--seeds", "0", "--train-seeds", "0", "1", "--cebra-iterations", "3",
               "--projection", "pca", "--no-progress", *sets])
    assert rc == 0
    result = json.loads(out.read_text())
    assert ISSUE_KEYS <= set(result)
    assert result["default_method"] == "contrastive_noswap" and result["train_seeds"] == [0, 1]
    assert set(result["seed_sd"]["multi_animal"]) == METHODS
    assert all(result["seed_sd"]["multi_animal"][m]["1.0"] >= 0 for m in METHODS)
    assert result["seed_sd"]["multi_animal"]["raw_linear"]["1.0"] == 0.0  # nothing trained
    assert (tmp_path / "runs" / "ours" / "seed1" / "checkpoint.pt").is_file()
    for proto in ("multi_animal", "single_animal", "identity"):
        assert set(result[proto]) == METHODS
        assert all(set(v) == {"0.5", "1.0"} for v in result[proto].values())
        assert all(0.0 <= x <= 100.0 for v in result[proto].values() for x in v.values())
        assert set(result["spread"][proto]) == METHODS
    assert result["dataset"]["animals"] == 3 and result["dataset"]["trials"] == 6
    assert result["train_throughput_windows_per_s"]["raw_linear"] is None
    assert result["train_throughput_windows_per_s"]["ours"] > 0
    table = out.with_suffix(".md").read_text()
    assert "| Pose-guided contrastive + per-animal normalisation + cross-animal positives (default) |" in table
    # identity also where the contrastive loss works: every contrastive entry has a projection head
    assert set(result["identity_projection"]) == TRAINED_CONTRASTIVE
    assert all(0.0 <= v["mean"] <= 100.0 and v["seed_sd"] >= 0 for v in result["identity_projection"].values())
    assert "Identity on the contrastive projection" in table
    diagnostic = result["per_animal_standardised"]
    assert set(diagnostic) == {"multi_animal", "identity"} and set(diagnostic["identity"]) == METHODS
    assert "Diagnostic: where identity lives" in out.with_suffix(".md").read_text()
    report = out.with_name("train-report")
    assert {"report.json", "report.md", "confusion_contrastive_noswap.png",
            "embedding_contrastive_noswap.png"} <= {p.name for p in report.iterdir()}
    # A second run reuses the checkpoints instead of training again.
    rc = main(["bench-train", "--preset", "tiny", "--data", str(trainer_dataset), "--out", str(out),
               "--work", str(tmp_path / "runs"), "--seeds", "0", "--train-seeds", "0", "1", "--methods", "ours",
               "raw_linear", "--reuse",
               "--projection", "pca", "--no-progress", *sets])
    assert rc == 0
    again = json.loads(out.read_text())
    assert again["multi_animal"]["ours"] == result["multi_animal"]["ours"]
