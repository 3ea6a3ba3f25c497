from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainer.evaluation.figures import confusion_png, embedding_png
from trainer.evaluation.protocol import run_protocols
from trainer.evaluation.report import (
    METHOD_TITLES,
    bench_json,
    markdown_tables,
    seed_statistics,
    standardisation_table,
    write_json_atomic,
)
from trainer.evaluation.windows import standardised_per_animal


@pytest.fixture(scope="module")
def summaries(windows_factory):  # type: ignore[no-untyped-def]
    make_windows = windows_factory
    good = run_protocols(make_windows(windows_per_trial=160), seeds=(0, 1), block=20).summary()
    noisy = run_protocols(make_windows(action_signal=0.0, identity_signal=5.0, windows_per_trial=160), seeds=(0, 1), block=20).summary()
    return {"ours": good, "raw_linear": noisy}


def test_bench_json_has_the_issue_shape(summaries) -> None:  # type: ignore[no-untyped-def]
    chance = summaries["ours"]["chance"]
    acc = {m: s["accuracy"] for m, s in summaries.items()}
    out = bench_json({"animals": 4}, chance, acc, {"ours": 123.0, "raw_linear": None})
    assert set(out) == {"dataset", "chance", "multi_animal", "single_animal", "identity", "spread",
                        "train_throughput_windows_per_s"}
    assert list(out["multi_animal"]) == ["raw_linear", "ours"]  # table order, baselines first
    assert set(out["multi_animal"]["ours"]) == {"0.5", "1.0"}
    assert out["multi_animal"]["ours"]["1.0"] == pytest.approx(100.0)
    assert out["identity"]["raw_linear"]["1.0"] == pytest.approx(100.0)
    assert out["chance"]["identity"] == pytest.approx(25.0, abs=1.0)
    assert set(out["spread"]) == {"single_animal", "multi_animal", "identity"}
    json.dumps(out)  # plain JSON types only


def test_markdown_tables_show_every_method_and_bold_the_best(summaries) -> None:  # type: ignore[no-untyped-def]
    acc = {m: s["accuracy"] for m, s in summaries.items()}
    md = markdown_tables(acc, summaries["ours"]["chance"])
    assert "Table 1" in md and "Table 2" in md
    row = next(line for line in md.splitlines() if line.startswith(f"| {METHOD_TITLES['ours']} |"))
    assert row.count("**100.0 ± 0.0**") >= 2  # single- and multi-animal at 100 % labels
    assert "| Linear on raw frames |" in md
    assert "Chance" in md


def test_standardisation_table_sets_identity_before_and_after_side_by_side(windows_factory) -> None:  # type: ignore[no-untyped-def]
    # identity carried by a per-animal offset only: standardising each animal removes it
    ws = windows_factory(action_signal=2.0, identity_signal=5.0, windows_per_trial=160)
    protocols = ("multi_animal", "identity")
    plain = run_protocols(ws, fractions=(1.0,), seeds=(0,), protocols=protocols).summary()["accuracy"]
    after = run_protocols(standardised_per_animal(ws), fractions=(1.0,), seeds=(0,), protocols=protocols).summary()["accuracy"]
    md = standardisation_table({"ours": plain}, {"ours": after})
    row = next(line for line in md.splitlines() if line.startswith(f"| {METHOD_TITLES['ours']} |"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    assert cells[0] == f"{plain['multi_animal']['1.0']['mean']:.1f} ± {plain['multi_animal']['1.0']['std']:.1f}"
    identity_plain, identity_after = (float(c.split(" ± ")[0]) for c in cells[2:])
    assert identity_plain > 90.0 and identity_after < 60.0


def test_training_seeds_are_averaged_and_their_spread_reported() -> None:
    def summary(mean: float, std: float) -> dict:
        return {"multi_animal": {"1.0": {"mean": mean, "std": std, "n": 4}}}

    runs = {"ours": [summary(70.0, 2.0), summary(74.0, 4.0), summary(72.0, 3.0)], "raw_linear": [summary(40.0, 1.0)]}
    summaries, seed_sd = seed_statistics(runs)
    assert summaries["ours"]["multi_animal"]["1.0"] == {"mean": 72.0, "std": 3.0, "n": 12, "seeds": 3}
    assert seed_sd["multi_animal"]["ours"]["1.0"] == pytest.approx(2.0)  # sample sd of 70, 74, 72
    assert seed_sd["multi_animal"]["raw_linear"]["1.0"] == 0.0
    md = markdown_tables(summaries, {"multi_animal": {"1.0": {"mean": 30.0, "std": 0.0}}}, seed_sd=seed_sd)
    assert "72.0 ± 2.0 (3.0)" in md and "40.0 ± 1.0" in md


def test_json_is_written_atomically(tmp_path: Path) -> None:
    p = write_json_atomic(tmp_path / "sub" / "r.json", {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        write_json_atomic(p, {"a": object()})
    assert json.loads(p.read_text()) == {"a": 1}  # the old file survives a failed write
    assert [q.name for q in p.parent.iterdir()] == ["r.json"]
    import os

    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask  # readable as any file, not mkstemp's 0600


def test_figures_render(tmp_path: Path, windows_factory) -> None:  # type: ignore[no-untyped-def]
    ws = windows_factory(n_animals=3, windows_per_trial=100)
    cm = np.array([[5, 1, 0, 0], [0, 6, 0, 0], [0, 0, 0, 0], [2, 0, 0, 3]])
    p = confusion_png(cm, ws.class_names, tmp_path / "confusion.png")
    q = embedding_png(ws, tmp_path / "embedding.png", method="pca", max_points=200)
    for f in (p, q):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 5000
    assert sorted(x.name for x in tmp_path.iterdir()) == ["confusion.png", "embedding.png"]
