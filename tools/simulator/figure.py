"""Overview PNG: example frames of two animals side by side, a pose skeleton, an ethogram."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from trainer.data.recording import open_trial  # noqa: E402
from trainer.data.schema import ACTION_NAMES, skeleton_edges  # noqa: E402


def overview_figure(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """Draw the first trial of two different animals (frames, skeleton, ethograms); write `out`."""
    by_animal: dict[str, Path] = {}
    for p in paths:
        with open_trial(p) as t:
            by_animal.setdefault(t.animal_id, Path(p))
        if len(by_animal) == 2:
            break
    chosen = list(by_animal.values())
    fig = plt.figure(figsize=(13, 7.5), layout="constrained")
    grid = fig.add_gridspec(3, 4, height_ratios=[1.0, 1.0, 0.45])
    colours = plt.get_cmap("tab10")(np.arange(len(ACTION_NAMES)))
    cmap = ListedColormap(np.vstack([[0.85, 0.85, 0.85, 1.0], colours]))
    for row, path in enumerate(chosen):
        with open_trial(path, in_memory=True) as trial:
            frames = np.asarray(trial.neural, dtype=np.float32)
            labels = trial.neural_labels()
            mean = frames.mean(axis=0)
            lo, hi = np.percentile(mean, [1, 99.5])
            ax = fig.add_subplot(grid[row, 0])
            ax.imshow(mean, cmap="gray", vmin=lo, vmax=hi)
            ax.set_title(f"{trial.animal_id}: mean frame (raw counts)", fontsize=9)
            ax.axis("off")
            # Frame at the most active moment relative to the mean (each frame scaled to the mean's
            # median first, so slow bleaching does not pick the first frame): shows tuned neurons.
            scale = np.median(mean) / np.median(frames.reshape(len(frames), -1), axis=1)
            deviation = frames * scale[:, None, None] - mean
            k = int(np.argmax(np.percentile(deviation.reshape(len(frames), -1), 99.5, axis=1)))
            ax = fig.add_subplot(grid[row, 1])
            ax.imshow(frames[k] - mean, cmap="magma", vmin=0, vmax=np.percentile(frames[k] - mean, 99.8))
            name = ACTION_NAMES[labels[k]] if labels[k] >= 0 else "unlabelled"
            ax.set_title(f"frame {k} minus mean ({name})", fontsize=9)
            ax.axis("off")
            if row == 0:
                ax3 = fig.add_subplot(grid[0:2, 2:], projection="3d")
                i = int(np.argmax(trial.labels == 0)) if trial.labels is not None else 0
                pose = trial.pose[i]
                for a, b in skeleton_edges():
                    ax3.plot(*zip(pose[a], pose[b]), color="k", lw=1.5)
                ax3.scatter(*pose.T, s=8, c="tab:red")
                ax3.set_title(f"{trial.animal_id} pose at {trial.pose_times[i]:.2f} s (38 joints, mm)", fontsize=9)
                ax3.set_xlabel("x (anterior)")
                ax3.set_ylabel("y (left)")
                ax3.set_zlabel("z (up)")
                ax3.view_init(elev=25, azim=-60)
            ax = fig.add_subplot(grid[2, row * 2 : row * 2 + 2])
            if trial.labels is not None:
                ax.imshow(trial.labels[None, :] + 1, aspect="auto", cmap=cmap, vmin=0, vmax=len(ACTION_NAMES),
                          interpolation="nearest", extent=(trial.pose_times[0], trial.pose_times[-1], 0, 1))
            ax.set_yticks([])
            ax.set_xlabel("time (s)")
            ax.set_title(f"{trial.animal_id} {trial.trial_id} ethogram", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i]) for i in range(len(ACTION_NAMES))]
    fig.legend(handles, ACTION_NAMES, loc="outside lower center", ncol=len(ACTION_NAMES), fontsize=8)
    out_path = Path(out)
    tmp = out_path.with_name(f".{out_path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out_path)
    return out_path
