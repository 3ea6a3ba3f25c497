from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from trainer.evaluation.gap import domain_gap, gap_table, main
from trainer.evaluation.report import METHOD_TITLES
from trainer.evaluation.windows import EvaluationError


def test_shared_action_code_has_no_gap_and_an_animal_specific_code_does(windows_factory) -> None:  # type: ignore[no-untyped-def]
    shared = windows_factory(n_animals=4, action_signal=4.0, windows_per_trial=160)
    g = domain_gap(shared)
    assert g["seen"] > 95.0 and abs(g["gap"]) < 3.0
    assert set(g["per_animal"]) == {"fly0", "fly1", "fly2", "fly3"}
    # an animal offset the probe never saw moves the unseen animal across class boundaries
    offset = domain_gap(windows_factory(n_animals=4, action_signal=4.0, identity_signal=3.0, windows_per_trial=160))
    assert offset["seen"] > 95.0 and offset["gap"] > 15.0

    # fly0 writes each action on another feature: known animals still decode, fly0 does not
    feats = shared.features.copy()
    fly0 = shared.animals == "fly0"
    feats[np.ix_(fly0, [0, 1, 2, 3])] = feats[np.ix_(fly0, [1, 2, 3, 0])]
    g2 = domain_gap(replace(shared, features=feats))
    assert g2["per_animal"]["fly0"]["unseen"] < 40.0
    assert g2["per_animal"]["fly0"]["seen"] > 90.0  # the others' new trials, probe without fly0
    assert g2["gap"] > g["gap"] + 8.0  # averaged over the 4 held-out animals, one of them shifted
    assert f"| {METHOD_TITLES['ours']} |" in gap_table({"ours": g2})


def test_one_animal_or_one_trial_is_refused(windows_factory) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EvaluationError, match=">= 2 animals"):
        domain_gap(windows_factory(n_animals=1))


def test_command_scores_every_checkpoint_of_a_work_folder(tmp_path: Path, trainer_dataset: Path) -> None:
    import torch

    from trainer.models import build_model

    torch.manual_seed(0)
    model = build_model("neural_conv", frame_shape=[32, 32], window=4, pooled_size=16, channels=[4, 8],
                        features=8, temporal_channels=8, embedding_dim=6)
    for method in ("ours", "contrastive_noswap"):
        (tmp_path / "runs" / method).mkdir(parents=True)
        torch.save({"model_name": "neural_conv", "model_args": model.model_args, "state_dict": model.state_dict(),
                    "config": {"method": method}}, tmp_path / "runs" / method / "checkpoint.pt")
    out = tmp_path / "gap.json"
    assert main(["--work", str(tmp_path / "runs"), "--data", str(trainer_dataset), "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"ours", "contrastive_noswap"}
    assert set(result["ours"]["per_animal"]) == {"animal0", "animal1", "animal2"}
    assert result["ours"]["gap"] == pytest.approx(result["ours"]["seen"] - result["ours"]["unseen"])
    assert f"| {METHOD_TITLES['contrastive_noswap']} |" in out.with_suffix(".md").read_text()
    assert main(["--work", str(tmp_path / "nothing"), "--data", str(trainer_dataset), "--out", str(out)]) == 1
