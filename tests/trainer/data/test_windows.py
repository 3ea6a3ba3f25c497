"""Windowed datasets: alignment by timestamps, lazy == in-memory, DataLoader workers, bad input."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from trainer.data.recording import RecordingError, open_trial, write_trial
from trainer.data.windows import InMemoryWindowDataset, WindowDataset


def test_items_are_aligned(small_dataset: list[Path]) -> None:
    ds = WindowDataset(small_dataset, window=5)
    assert len(ds) == (30 - 4) + (25 - 4) + (35 - 4)
    assert ds.animals == ["flyA", "flyB"]
    assert ds.frame_shape == (12, 10)
    for idx in (0, 7, len(ds) - 1, -1):
        item = ds[idx]
        assert set(item) == {"neural", "pose", "label", "animal", "trial", "index"}
        assert item["neural"].shape == (5, 12, 10) and item["neural"].dtype == np.float32
        assert item["pose"].shape == (5, 38, 3) and item["pose"].dtype == np.float32
        with open_trial(small_dataset[item["trial"]], in_memory=True) as t:
            last = item["index"]
            np.testing.assert_array_equal(item["neural"], t.neural[last - 4 : last + 1].astype(np.float32))
            np.testing.assert_allclose(item["pose"], t.pose_at(t.neural_times[last - 4 : last + 1]))
            assert item["label"] == t.neural_labels()[last]
            assert ds.animals[item["animal"]] == t.animal_id
    assert ds[-1]["trial"] == 2 and ds[-1]["index"] == 34
    np.testing.assert_array_equal(ds.labels, [ds[i]["label"] for i in range(len(ds))])
    np.testing.assert_array_equal(ds.item_animals, [ds[i]["animal"] for i in range(len(ds))])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_lazy_equals_in_memory_with_stride(small_dataset: list[Path]) -> None:
    lazy = WindowDataset(small_dataset, window=4, stride=3)
    ram = InMemoryWindowDataset(small_dataset, window=4, stride=3)
    assert len(lazy) == len(ram) == len(range(3, 30, 3)) + len(range(3, 25, 3)) + len(range(3, 35, 3))
    assert ram.nbytes == sum(n * 12 * 10 * 2 for n in (30, 25, 35))  # uint16 kept as stored
    for i in range(len(lazy)):
        a, b = lazy[i], ram[i]
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_directory_argument(small_dataset: list[Path]) -> None:
    assert len(InMemoryWindowDataset(small_dataset[0].parent, window=30)) == 1 + 6  # 25-frame trial too short


def test_lazy_dataset_pickles_without_handles(small_dataset: list[Path]) -> None:
    ds = WindowDataset(small_dataset, window=3)
    first = ds[0]
    assert ds._handles  # opened lazily on first use
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._handles == {}
    np.testing.assert_array_equal(clone[0]["neural"], first["neural"])
    ds.close()
    clone.close()


def test_dataloader_with_workers(small_dataset: list[Path]) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    ds = WindowDataset(small_dataset, window=6, stride=2)
    ds[0]  # the parent holds an open handle: forked workers must not reuse it
    loader = DataLoader(ds, batch_size=8, shuffle=False, num_workers=2)
    seen = []
    for batch in loader:
        assert batch["neural"].shape[1:] == (6, 12, 10) and batch["neural"].dtype == torch.float32
        assert batch["pose"].shape[1:] == (6, 38, 3)
        seen.extend(zip(batch["trial"].tolist(), batch["index"].tolist(), batch["neural"].sum(dim=(1, 2, 3)).tolist()))
    expected = [(ds[i]["trial"], ds[i]["index"], float(ds[i]["neural"].sum())) for i in range(len(ds))]
    assert seen == expected
    ds.close()


def test_bad_arguments(small_dataset: list[Path], tmp_path: Path, make_arrays: Callable[..., dict]) -> None:
    with pytest.raises(ValueError, match="window"):
        WindowDataset(small_dataset, window=0)
    with pytest.raises(ValueError, match="at least 100 neural frames"):
        InMemoryWindowDataset(small_dataset, window=100)
    with pytest.raises(ValueError, match="no trials"):
        WindowDataset([], window=2)
    other = make_arrays(shape=(8, 8))
    odd = write_trial(tmp_path / "odd.h5", **other)
    with pytest.raises(RecordingError, match="different frame shapes"):
        WindowDataset([*small_dataset, odd], window=2)
