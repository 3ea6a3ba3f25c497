"""inspect: dataset summary (table and JSON), broken files reported, and the domain-gap read-outs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tools.cli import main
from tools.domain_gap import GapReport, block_average, measure_gap
from tools.simulator import simulate_dataset
from tools.simulator.presets import SimulationConfig
from trainer.data.recording import list_trials

GAP = SimulationConfig(name="gap", n_animals=3, trials_per_animal=3, trial_seconds=30.0, frame_shape=(32, 32),
                       n_template_neurons=40)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gap")
    simulate_dataset(GAP, seed=0, out_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def raw_gap(dataset: Path) -> GapReport:
    return measure_gap(list_trials(dataset), progress=False)


def test_table(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(dataset)]) == 0
    text = capsys.readouterr().out
    assert "3 animals, 9 trials" in text
    for animal in ("animal00", "animal01", "animal02"):
        assert animal in text
    assert "32x32 uint16" in text and "100.0%" in text and "forward_walking" in text


def test_json(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(dataset), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n_animals"] == 3 and doc["n_trials"] == 9 and doc["broken"] == []
    a = doc["animals"]["animal01"]
    assert a["trials"] == 3 and a["neural_rate_hz"] == [16.0] and a["pose_rate_hz"] == [100.0]
    assert a["frame_shape"] == [[32, 32]] and a["label_coverage"] == 1.0
    assert abs(sum(doc["class_fraction"].values()) - 1.0) < 1e-3
    assert doc["neural_frames"] == sum(v["neural_frames"] for v in doc["animals"].values())


def test_broken_file_is_reported_not_fatal(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for p in list_trials(dataset)[:2]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "zz_broken.h5").write_bytes(b"definitely not hdf5")
    assert main(["inspect", str(tmp_path)]) == 1
    text = capsys.readouterr().out
    assert "2 trials" in text
    assert "BROKEN" in text and "zz_broken.h5" in text and "not a readable HDF5 file" in text


def test_missing_directory(tmp_path: Path) -> None:
    assert main(["inspect", str(tmp_path / "absent")]) == 1


def test_block_average() -> None:
    x = np.arange(2 * 4 * 6, dtype=np.uint16).reshape(2, 4, 6)
    got = block_average(x, (2, 3))
    assert got.shape == (2, 2, 2)
    assert got[0, 0, 0] == pytest.approx(np.mean([0, 1, 2, 6, 7, 8]))
    assert got[1, 1, 1] == pytest.approx(x[1, 2:4, 3:6].mean())


def test_gap_is_real(raw_gap: GapReport) -> None:
    """The simulator's promise: actions decode within an animal, not across; identity is obvious."""
    gap = raw_gap
    assert gap.n_animals == 3 and gap.n_trials == 9 and gap.feature_shape == (16, 16)
    assert gap.identity_accuracy is not None and gap.identity_accuracy >= 0.98
    assert gap.within_animal_accuracy is not None and gap.held_out_animal_accuracy is not None
    assert gap.within_animal_accuracy > gap.chance_action_accuracy + 0.05
    assert gap.held_out_animal_accuracy < gap.within_animal_accuracy - 0.15
    assert set(gap.per_animal) == {"animal00", "animal01", "animal02"}


def test_gap_is_closable(raw_gap: GapReport) -> None:
    """The same trials read out from aligned ground-truth activity transfer across animals far
    better than raw pixels: the gap is optics and anatomy, so a method has something to learn."""
    from tools.simulator.ceiling import ceiling

    raw = raw_gap
    truth = ceiling(GAP, seed=0, progress=False)
    assert truth["chance_action_accuracy"] == pytest.approx(raw.chance_action_accuracy, abs=0.01)  # same trials
    assert truth["held_out_animal_accuracy"] > raw.held_out_animal_accuracy + 0.1
    assert truth["held_out_animal_accuracy"] > truth["chance_action_accuracy"]


def test_gap_cli_json(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # One trial per animal: no within-animal or identity score, said so rather than invented.
    for p in list_trials(dataset):
        if p.name.endswith("trial00.h5"):
            (tmp_path / p.name).write_bytes(p.read_bytes())
    assert main(["inspect", str(tmp_path), "--gap", "--json"]) == 0
    gap = json.loads(capsys.readouterr().out)["gap"]
    assert gap["within_animal_accuracy"] is None and gap["identity_accuracy"] is None
    assert 0.0 <= gap["held_out_animal_accuracy"] <= 1.0
    assert any("single trial" in n for n in gap["notes"])
