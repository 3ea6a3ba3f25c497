from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from trainer.evaluation.gap import domain_gap, gap_table
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
    assert "| Pose-guided contrastive + swapping (ours) |" in gap_table({"ours": g2})


def test_one_animal_or_one_trial_is_refused(windows_factory) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EvaluationError, match=">= 2 animals"):
        domain_gap(windows_factory(n_animals=1))
