"""Figures of an evaluation: confusion matrix and 2-D projections of the embeddings (PNG, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trainer.evaluation.windows import WindowSet


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:  # type: ignore[no-untyped-def]
    """Save through a temporary name, then rename, so a crash never leaves a half PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    tmp.replace(path)
    return path


def confusion_png(confusion: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (true rows, predicted columns) with counts-based recall in cells."""
    plt = _pyplot()
    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.7 * n))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    for i in range(n):
        for j in range(n):
            if rows[i, 0] > 0:
                ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center",
                        color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(n), [c.replace("_", " ") for c in class_names], rotation=45, ha="right")
    ax.set_yticks(range(n), [f"{c.replace('_', ' ')} (n={int(rows[i, 0])})" for i, c in enumerate(class_names)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = cm.sum()
    acc = 100 * np.trace(cm) / total if total else 0.0
    ax.set_title(title or f"confusion, % of each true class (accuracy {acc:.1f} %)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    out = _save(fig, Path(path))
    plt.close(fig)
    return out


def project_2d(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2) by PCA (fast, linear) or t-SNE (local structure; slower)."""
    from sklearn.decomposition import PCA

    x = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-8)
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        x = PCA(n_components=min(30, x.shape[1]), random_state=seed).fit_transform(x)
        return TSNE(n_components=2, init="pca", perplexity=30, random_state=seed).fit_transform(x)
    raise ValueError(f"unknown projection {method!r}; use 'pca' or 'tsne'")


def embedding_png(
    ws: WindowSet, path: str | Path, method: str = "pca", max_points: int = 3000, seed: int = 0, title: str = "",
) -> Path:
    """Side-by-side 2-D projection of labelled windows, coloured by action and by animal.

    Mixed animal colours with separated action colours is what an identity-free, action-aware
    embedding looks like.
    """
    plt = _pyplot()
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(ws.labels >= 0)
    if idx.size == 0:
        idx = np.arange(ws.features.shape[0])
    if idx.size > max_points:
        idx = np.sort(rng.choice(idx, size=max_points, replace=False))
    xy = project_2d(ws.features[idx], method=method, seed=seed)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    cmap_a = plt.get_cmap("tab10")
    for k, name in enumerate(ws.class_names):
        m = ws.labels[idx] == k
        if m.any():
            axes[0].scatter(xy[m, 0], xy[m, 1], s=4, color=cmap_a(k % 10), label=name.replace("_", " "), alpha=0.7)
    axes[0].set_title("coloured by action")
    animals = ws.animal_ids
    cmap_b = plt.get_cmap("tab20" if len(animals) > 10 else "tab10")
    for k, animal in enumerate(animals):
        m = ws.animals[idx] == animal
        axes[1].scatter(xy[m, 0], xy[m, 1], s=4, color=cmap_b(k % cmap_b.N), label=animal, alpha=0.7)
    axes[1].set_title("coloured by animal")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(markerscale=3, fontsize=7, loc="best", frameon=False)
    fig.suptitle(title or f"{method.upper()} of {idx.size} window embeddings")
    out = _save(fig, Path(path))
    plt.close(fig)
    return out
