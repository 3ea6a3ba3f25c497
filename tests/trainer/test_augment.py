"""Each augmentation: deterministic for a generator, off at strength 0, physically right."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.augment import (
    NeuralAugmenter,
    NeuralAugmentParams,
    PoseAugmenter,
    PoseAugmentParams,
    brightness_baseline,
    calcium_kinetics,
    joint_dropout,
    motion,
    pose_noise,
    read_noise,
    shot_noise,
)


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def windows(b: int = 4, w: int = 6, h: int = 16, wd: int = 20, level: float = 500.0) -> torch.Tensor:
    return torch.full((b, w, h, wd), level) + torch.rand(b, w, h, wd, generator=g(99)) * 100


NEURAL = {
    "shot": lambda x, gen: shot_noise(x, gen, 1.0),
    "read": lambda x, gen: read_noise(x, gen, 5.0),
    "brightness": lambda x, gen: brightness_baseline(x, gen, 0.3, 0.1),
    "motion": lambda x, gen: motion(x, gen, 0.1, 3.0, 0.5, max_zoom=0.1),
    "calcium": lambda x, gen: calcium_kinetics(x, gen, 16.0, 1.0, (0.5, 1.5)),
}


@pytest.mark.parametrize("name", sorted(NEURAL))
def test_neural_augmentations_are_pure_functions_of_input_and_generator(name: str) -> None:
    x = windows()
    before = x.clone()
    a, b, c = NEURAL[name](x, g(1)), NEURAL[name](x, g(1)), NEURAL[name](x, g(2))
    torch.testing.assert_close(a, b)  # same generator state -> same output
    assert not torch.equal(a, c)      # another seed -> another draw
    torch.testing.assert_close(x, before)  # input untouched
    assert a.shape == x.shape and (a >= 0).all()


def test_zero_strength_is_identity() -> None:
    x = windows()
    torch.testing.assert_close(shot_noise(x, g(), 0.0), x)
    torch.testing.assert_close(read_noise(x, g(), 0.0), x)
    torch.testing.assert_close(brightness_baseline(x, g(), 0.0, 0.0), x)
    torch.testing.assert_close(motion(x, g(), 0.0, 0.0, 0.0, max_zoom=0.0), x, atol=1e-3, rtol=1e-5)
    off = NeuralAugmentParams(shot_noise=0, read_noise=0, log_gain=0, baseline=0, shift=0,
                              rotation_deg=0, zoom=0, jitter_px=0, calcium=False)
    torch.testing.assert_close(NeuralAugmenter(off, 16.0, 2)(x, g()), x)


def test_shot_noise_variance_grows_with_signal_and_shrinks_with_pooling() -> None:
    x = torch.cat([torch.full((200, 1, 8, 8), 100.0), torch.full((200, 1, 8, 8), 1600.0)], dim=1)
    noisy = shot_noise(x, g(), 1.0)
    var_low, var_high = (noisy - x)[:, 0].var().item(), (noisy - x)[:, 1].var().item()
    # strength ~ U(0, 1): E[s^2] = 1/3, variance = x / 3
    assert var_low == pytest.approx(100 / 3, rel=0.15)
    assert var_high / var_low == pytest.approx(16.0, rel=0.15)
    pooled = shot_noise(x, g(), 1.0, pixel_area=16.0)
    assert (pooled - x)[:, 1].var().item() == pytest.approx(var_high / 16, rel=0.15)


def test_brightness_is_a_gain_and_an_offset_per_window() -> None:
    x = windows(b=8)
    y = brightness_baseline(x, g(), 0.3, 0.0)
    ratio = y / x
    per_window = ratio.flatten(1)
    torch.testing.assert_close(per_window.min(dim=1).values, per_window.max(dim=1).values)
    assert ((per_window[:, 0] > math.exp(-0.3) - 1e-4) & (per_window[:, 0] < math.exp(0.3) + 1e-4)).all()
    z = brightness_baseline(x, g(), 0.0, 0.1)
    diff = (z - x).flatten(1)
    torch.testing.assert_close(diff.min(dim=1).values, diff.max(dim=1).values, atol=1e-3, rtol=0)


def test_motion_moves_a_blob_by_the_drawn_subpixel_shift() -> None:
    h = w = 32
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    blob = torch.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 6.0)
    x = blob.expand(64, 1, h, w).clone()
    y = motion(x, g(3), 3.0 / 32, 0.0, 0.0)  # shift: fraction of the frame side

    def centroid(im: torch.Tensor) -> torch.Tensor:
        m = im.sum(dim=(-2, -1))
        return torch.stack([(im * xx).sum(dim=(-2, -1)) / m, (im * yy).sum(dim=(-2, -1)) / m], -1)

    moved = centroid(y) - centroid(x)  # (64, 1, 2)
    assert moved.abs().max() <= 3.0 + 0.05
    assert moved.abs().max() > 1.0  # it did move, by sub-pixel amounts
    assert not torch.allclose(moved, moved.round(), atol=1e-2)
    # per-frame jitter is in raw pixels; pool_factor converts it to the pooled grid
    j1 = centroid(motion(x, g(4), 0.0, 0.0, 1.0)) - centroid(x)
    j4 = centroid(motion(x, g(4), 0.0, 0.0, 1.0, pool_factor=4)) - centroid(x)
    torch.testing.assert_close(j4, j1 / 4, atol=0.02, rtol=0)
    # zoom scales the blob's spread about the centre
    def spread(im: torch.Tensor) -> torch.Tensor:
        c = centroid(im)
        d2 = (xx - c[..., 0, None, None]) ** 2 + (yy - c[..., 1, None, None]) ** 2
        return ((im * d2).sum(dim=(-2, -1)) / im.sum(dim=(-2, -1))).sqrt()
    ratio = spread(motion(x, g(5), 0.0, 0.0, 0.0, max_zoom=0.3)) / spread(x)
    assert ratio.min() < 0.9 and ratio.max() > 1.1 and ratio.min() > 0.65 and ratio.max() < 1.35


def test_calcium_kinetics_identity_at_nominal_tau_and_slower_decay_at_larger_tau() -> None:
    rate, tau = 16.0, 1.0
    gamma = math.exp(-1 / (rate * tau))
    t = torch.arange(12, dtype=torch.float32)
    trace = 100.0 + 50.0 * torch.where(t >= 2, gamma ** (t - 2), torch.zeros_like(t))  # one spike at t=2
    x = trace.view(1, 12, 1, 1).expand(3, 12, 2, 2).contiguous()
    same = calcium_kinetics(x, g(), rate, tau, (tau, tau))
    torch.testing.assert_close(same, x, atol=1e-3, rtol=0)
    slow = calcium_kinetics(x, g(), rate, tau, (2.0, 2.0))
    fast = calcium_kinetics(x, g(), rate, tau, (0.3, 0.3))
    assert (slow[:, -1] > x[:, -1]).all() and (fast[:, -1] < x[:, -1]).all()
    torch.testing.assert_close(slow[:, :3], x[:, :3], atol=1e-3, rtol=0)  # the rise is unchanged


def test_pose_augmentations() -> None:
    poses = torch.randn(16, 10, 6, 3, generator=g(5))
    torch.testing.assert_close(pose_noise(poses, g(1), 0.1), pose_noise(poses, g(1), 0.1))
    assert (pose_noise(poses, g(1), 0.1) - poses).std().item() == pytest.approx(0.1, rel=0.1)
    dropped = joint_dropout(poses, g(2), 0.25)
    lost = (dropped == 0).all(dim=-1).float().mean().item()
    assert lost == pytest.approx(0.25, abs=0.05)
    kept = (dropped != 0).all(dim=-1)
    torch.testing.assert_close(dropped[kept], poses[kept])
    torch.testing.assert_close(PoseAugmenter(PoseAugmentParams(0.0, 0.0))(poses, g()), poses)
    with pytest.raises(ValueError, match="B, T, J, 3"):
        pose_noise(poses[0], g(), 0.1)
    with pytest.raises(ValueError, match="B, W, h, w"):
        shot_noise(poses[0], g(), 1.0)
