"""DistributedDataParallel on CPU: 2 processes, gloo, launched by torchrun exactly as users do."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent(
    """
    import sys, torch
    from trainer.config import load_config
    from trainer.train import train
    data, out = sys.argv[1], sys.argv[2]
    cfg = load_config("tiny", sys.argv[3:])
    result = train(cfg, data, out)
    rank = torch.distributed.get_rank()
    torch.save({k: v.detach().clone() for k, v in result.encoder.state_dict().items()}, f"{out}/rank{rank}.pt")
    """
)


@pytest.mark.slow
def test_two_gloo_processes_train_one_model(trainer_dataset: Path, tmp_path: Path, fast_overrides: list[str]) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(script), str(trainer_dataset), str(out), *fast_overrides, "optim.epochs=2"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["metrics"]["world_size"] == 2
    assert len(ckpt["metrics"]["history"]) == 2
    r0, r1 = torch.load(out / "rank0.pt", weights_only=True), torch.load(out / "rank1.pt", weights_only=True)
    weights = [k for k in r0 if "running_" not in k and "num_batches" not in k]
    assert weights
    for key in weights:  # gradients were averaged: both processes hold the same weights
        torch.testing.assert_close(r0[key], r1[key], msg=key)
    # BatchNorm statistics are per process; DDP broadcasts rank 0's before every forward, and
    # rank 0's are the ones saved, so export and serving see one consistent model.
    for key in ckpt["state_dict"]:  # and the checkpoint is that model
        torch.testing.assert_close(ckpt["state_dict"][key], r0[key], msg=key)
