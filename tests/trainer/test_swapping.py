from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.swapping import (
    SwapIndex,
    animal_scale,
    body_anchor_joints,
    normalise_poses,
    pose_descriptors,
    with_history,
)

NAMES = ["RF_ThC", "RF_Claw", "LF_ThC", "LF_Claw"]


def test_normalisation_removes_position_and_animal_scale_but_keeps_posture() -> None:
    rng = np.random.default_rng(0)
    poses = rng.normal(size=(50, 4, 3)).astype(np.float32)
    anchor = body_anchor_joints(NAMES)
    assert anchor == [0, 2]
    a = normalise_poses(poses, anchor, animal_scale(poses, anchor))
    moved = poses * 2.5 + np.array([10.0, -3.0, 7.0], dtype=np.float32)  # bigger animal, elsewhere
    b = normalise_poses(moved, anchor, animal_scale(moved, anchor))
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a[:, anchor].mean(axis=1), 0.0, atol=1e-5)  # centred on the anchor
    rms = np.sqrt((a**2).sum(-1).mean(-1))
    assert np.median(rms) == pytest.approx(1.0, rel=1e-4)
    assert rms.std() > 0.05  # per-frame posture size differences survive
    assert body_anchor_joints(["a", "b"]) == [0, 1]
    with pytest.raises(ValueError, match="scale"):
        animal_scale(np.zeros((5, 4, 3)), anchor)


def test_descriptors_keep_distances_of_low_rank_data() -> None:
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(300, 5))
    segs = (latent @ rng.normal(size=(5, 6 * 4 * 3))).reshape(300, 6, 4, 3).astype(np.float32)
    d = pose_descriptors(segs, steps=6, dims=8)
    assert d.shape == (300, 8)
    full = segs.reshape(300, -1)
    np.testing.assert_allclose(np.linalg.norm(d[0] - d[1:], axis=1), np.linalg.norm(full[0] - full[1:], axis=1), rtol=1e-3)


def test_history_descriptor_holds_earlier_frames_of_the_same_trial_only() -> None:
    desc = np.arange(12, dtype=np.float32).reshape(6, 2)  # frame i = (2i, 2i + 1)
    trial = np.array([0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(with_history(desc, trial, history=1), desc)
    out = with_history(desc, trial, history=3, samples=2) * np.sqrt(2)  # lags 0 and 2
    assert out.shape == (6, 4)
    np.testing.assert_allclose(out[3], [6, 7, 2, 3])  # frame 3 and frame 1
    np.testing.assert_allclose(out[1], [2, 3, 0, 1])  # lag 2 clamped at the trial's first frame
    np.testing.assert_allclose(out[5], [10, 11, 8, 9])  # never reaches back into trial 0
    # distances are RMS over the sampled times: two frames whose histories differ by d everywhere
    a = with_history(np.zeros((4, 3), np.float32), np.zeros(4), history=4, samples=4)
    b = with_history(np.ones((4, 3), np.float32), np.zeros(4), history=4, samples=4)
    assert np.linalg.norm(a[3] - b[3]) == pytest.approx(np.sqrt(3))
    with pytest.raises(ValueError, match="history"):
        with_history(desc, trial, history=0)
    with pytest.raises(ValueError, match="trial"):
        with_history(desc, trial[:3], history=2)


def _index(n_per: int = 200, animals: int = 3, k: int = 5, seed: int = 2) -> tuple[SwapIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    desc = rng.normal(size=(n_per * animals, 4)).astype(np.float32)
    animal = np.repeat(np.arange(animals), n_per)
    return SwapIndex.build(desc, animal, k=k, block=64), desc


def test_index_holds_the_exact_k_nearest_frames_of_every_animal() -> None:
    index, desc = _index()
    animal = index.animal.numpy()
    for i in (0, 57, 399, 599):
        for a in range(3):
            members = np.nonzero(animal == a)[0]
            d = np.linalg.norm(desc[members] - desc[i], axis=1)
            expected = members[np.argsort(d)[:5]]
            assert sorted(index.neighbours[i, a].tolist()) == sorted(expected.tolist())
            np.testing.assert_allclose(np.sort(index.distances[i, a].numpy()), np.sort(d)[:5], rtol=1e-4, atol=1e-5)


def test_sampling_swaps_into_one_other_animal_with_the_given_probability() -> None:
    index, _ = _index()
    gen = torch.Generator().manual_seed(0)
    starts = torch.arange(0, 590, 3)
    frames = starts.unsqueeze(1) + torch.arange(8)
    frames = frames[index.animal[frames].eq(index.animal[frames[:, :1]]).all(dim=1)]  # one animal per window
    out = index.sample(frames, 0.5, gen)
    changed = out != frames
    assert changed.float().mean().item() == pytest.approx(0.5, abs=0.06)
    own = index.animal[frames[:, 0]]
    swapped_animals = index.animal[out]
    assert (swapped_animals[changed] != own.unsqueeze(1).expand_as(out)[changed]).all()
    for row in range(len(out)):  # one s_hat per window
        assert len(set(swapped_animals[row][changed[row]].tolist())) <= 1
        for j in torch.nonzero(changed[row]).flatten().tolist():  # and a k-nearest neighbour in it
            assert out[row, j].item() in index.neighbours[frames[row, j], swapped_animals[row, j]].tolist()
    assert torch.equal(index.sample(frames, 0.0, gen), frames)
    assert (index.sample(frames, 1.0, gen) != frames).all()


def test_sampling_follows_exp_minus_distance_over_the_k_nearest() -> None:
    index, _ = _index(k=4)
    gen = torch.Generator().manual_seed(1)
    frame = torch.full((20000, 1), 10)
    out = index.sample(frame, 1.0, gen, temperature=1.0)
    for a in (1, 2):
        picked = out[index.animal[out[:, 0]] == a, 0]
        nbrs, dist = index.neighbours[10, a], index.distances[10, a]
        expected = torch.softmax(-dist, dim=0)
        observed = torch.tensor([(picked == nb).float().mean().item() for nb in nbrs])
        torch.testing.assert_close(observed, expected, atol=0.03, rtol=0)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="2 animals"):
        SwapIndex.build(np.zeros((10, 2), np.float32), np.zeros(10, int), k=3)
    index, _ = _index()
    with pytest.raises(ValueError, match="probability"):
        index.sample(torch.zeros(2, 3, dtype=torch.long), 1.5, torch.Generator())


def test_run_swapping_replaces_one_contiguous_stretch_of_another_animal() -> None:
    plain, desc = _index()
    trial = np.repeat(np.arange(12), 50)  # 600 frames: 12 trials of 50, contiguous, 4 per animal
    index = SwapIndex.build(desc, plain.animal.numpy(), k=5, trial=trial)
    gen = torch.Generator().manual_seed(0)
    starts = torch.arange(0, 590, 3)
    frames = starts.unsqueeze(1) + torch.arange(8)
    frames = frames[index.animal[frames].eq(index.animal[frames[:, :1]]).all(dim=1)]
    out = index.sample_runs(frames, 0.5, gen)
    changed = out != frames
    assert changed.float().mean().item() == pytest.approx(0.5, abs=0.08)
    own = index.animal[frames[:, 0]]
    for row in range(len(out)):
        pos = torch.nonzero(changed[row]).flatten()
        if len(pos) == 0:
            continue
        assert torch.equal(pos, torch.arange(pos[0], pos[-1] + 1))  # one block
        block = out[row, pos]
        assert torch.equal(block, torch.arange(block[0], block[0] + len(block)))  # a real stretch of time
        assert len(set(trial[block.numpy()].tolist())) == 1  # inside one trial
        assert (index.animal[block] != own[row]).all() and len(set(index.animal[block].tolist())) == 1
    assert torch.equal(index.sample_runs(frames, 0.0, gen), frames)
    with pytest.raises(ValueError, match="trial="):
        plain.sample_runs(frames, 0.5, gen)
