"""`bench-train --data DIR` benchmarks what is there: a folder without trials is an error unless
simulation was asked for, and tables are titled after the dataset, not the preset (issue 16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.cli import main
from trainer.cli_bench import dataset_summary, ensure_dataset, table_title
from trainer.data.recording import RecordingError, write_trial


@pytest.mark.parametrize("make", [True, False])
def test_a_named_folder_without_trials_is_not_simulated_into(tmp_path: Path, make: bool) -> None:
    data = tmp_path / "my_recordings"
    if make:
        data.mkdir()
        (data / "notes.txt").write_text("the trials are elsewhere")
    out = tmp_path / "bench" / "train.json"
    assert main(["bench-train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--no-progress"]) == 1
    assert not out.exists()
    assert (sorted(p.name for p in data.iterdir()) == ["notes.txt"]) if make else not data.exists()
    with pytest.raises(RecordingError, match="my_recordings: dataset folder .*--simulate to simulate the tiny preset"):
        ensure_dataset(data, "tiny", 0, simulate=False)


def test_simulate_flag_simulates_into_a_named_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    class Done:
        returncode = 0

    monkeypatch.setattr("trainer.cli_bench.subprocess.run", lambda cmd, check: calls.append(cmd) or Done())
    ensure_dataset(tmp_path / "sim", "tiny", 3, simulate=True)
    assert calls and calls[0][-6:] == ["--preset", "tiny", "--seed", "3", "--out", str(tmp_path / "sim")]


def _trial(path: Path, extra: dict[str, str]) -> None:
    write_trial(path, animal_id="a", trial_id=path.stem, neural=np.zeros((4, 3, 3), np.uint16),
                neural_times=np.arange(4) / 15.0, pose=np.zeros((10, 2, 3), np.float32), pose_times=np.arange(10) / 40.0,
                joint_names=["x", "y"], extra=extra)


def test_tables_are_titled_after_the_dataset(tmp_path: Path) -> None:
    imported, simulated = tmp_path / "lab_2026_flies", tmp_path / "sim"
    imported.mkdir()
    simulated.mkdir()
    _trial(imported / "a_t0.h5", {"source": "numpy"})
    _trial(simulated / "a_t0.h5", {"source": "simulator", "preset": "tiny"})
    title = table_title(dataset_summary(imported), "tiny", [0])
    assert title.startswith("Trainer benchmark (dataset lab_2026_flies: 1 animals, 1 trials") and "preset" not in title
    assert table_title(dataset_summary(simulated), "tiny", [0]).startswith("Trainer benchmark (simulated tiny preset:")
