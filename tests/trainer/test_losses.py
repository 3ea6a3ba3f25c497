from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.losses import animal_mmd, info_nce, nt_xent, pose_regression_loss


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_info_nce_matches_the_formula_written_out() -> None:
    zn, zb, tau = _unit(5, 4, 0), _unit(5, 4, 1), 0.2
    n = len(zn)
    n_to_b = -sum(
        math.log(math.exp(zb[i] @ zn[i] / tau) / sum(math.exp(zb[k] @ zn[i] / tau) for k in range(n)))
        for i in range(n)
    ) / n
    b_to_n = -sum(
        math.log(math.exp(zn[i] @ zb[i] / tau) / sum(math.exp(zn[k] @ zb[i] / tau) for k in range(n)))
        for i in range(n)
    ) / n
    assert info_nce(zn, zb, tau).item() == pytest.approx((n_to_b + b_to_n) / 2, rel=1e-5)


def test_info_nce_is_low_for_aligned_pairs_and_about_log_n_for_unrelated() -> None:
    z = _unit(64, 16, 2)
    aligned = info_nce(z, z, 0.1).item()
    unrelated = info_nce(z, _unit(64, 16, 3), 1.0).item()
    assert aligned < 0.1
    assert unrelated == pytest.approx(math.log(64), rel=0.1)
    # symmetric in its two arguments
    a, b = _unit(8, 4, 4), _unit(8, 4, 5)
    assert info_nce(a, b).item() == pytest.approx(info_nce(b, a).item(), rel=1e-6)


def test_nt_xent_matches_a_direct_computation() -> None:
    a, b, tau = _unit(4, 3, 6), _unit(4, 3, 7), 0.5
    z = torch.cat([a, b])
    total = 0.0
    for i in range(8):
        pos = (i + 4) % 8
        denom = sum(math.exp(z[i] @ z[k] / tau) for k in range(8) if k != i)
        total += -math.log(math.exp(z[i] @ z[pos] / tau) / denom)
    assert nt_xent(a, b, tau).item() == pytest.approx(total / 8, rel=1e-5)


def test_losses_have_gradients_and_reject_bad_batches() -> None:
    zn = _unit(6, 4, 8).requires_grad_()
    info_nce(zn, _unit(6, 4, 9)).backward()
    assert zn.grad is not None and torch.isfinite(zn.grad).all() and zn.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same shape"):
        info_nce(_unit(4, 3, 0), _unit(5, 3, 0))
    with pytest.raises(ValueError, match="at least 2"):
        nt_xent(_unit(1, 3, 0), _unit(1, 3, 0))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(_unit(4, 3, 0), _unit(4, 3, 1), temperature=0.0)


def test_pose_regression_loss() -> None:
    target = torch.randn(2, 5, 3, 3)
    assert pose_regression_loss(target.clone(), target).item() == 0.0
    assert pose_regression_loss(target + 1.0, target).item() == pytest.approx(1.0 - 0.05, rel=1e-5)
    with pytest.raises(ValueError, match="differ in shape"):
        pose_regression_loss(target[:1], target)


def test_animal_mmd_is_near_zero_for_alike_animals_and_grows_with_an_animal_offset() -> None:
    gen = torch.Generator().manual_seed(0)
    animal = torch.arange(4).repeat_interleave(64)
    alike = torch.randn(256, 8, generator=gen)
    shifted = alike + 3.0 * torch.nn.functional.one_hot(animal, 8).float()  # each animal moved along its own axis
    low, high = animal_mmd(alike, animal), animal_mmd(shifted, animal)
    assert 0.0 <= float(low) < 0.05
    assert float(high) > 10 * float(low) and float(high) > 0.1
    # the penalty pulls the animals together: its gradient points against each animal's offset
    x = shifted.clone().requires_grad_(True)
    animal_mmd(x, animal).backward()
    assert x.grad is not None
    assert float((x.grad[animal == 0, 0]).mean()) > 0  # animal 0 sits at +3 on axis 0: descent moves it back
    assert float(animal_mmd(alike, torch.zeros(256, dtype=torch.long))) == 0.0  # one animal: nothing to match
    with pytest.raises(ValueError, match="animals"):
        animal_mmd(alike, animal[:10])
