"""A small linear probe on frozen embeddings: standardise, multinomial logistic regression.

The fitted probe folds its standardisation into the weights, so `head()` is a plain linear map
of the raw embedding ({"weight": C x D, "bias": C}, the checkpoint's action head) and
`softmax(embedding @ weight.T + bias)` equals `predict_proba(embedding)`.
"""

from __future__ import annotations

import warnings

import numpy as np

# A class never seen in training gets this bias: probability ~ e^-30, never predicted.
_ABSENT_BIAS = -30.0


class LinearProbe:
    def __init__(self, c: float = 1.0, max_iter: int = 300) -> None:
        if c <= 0:
            raise ValueError(f"inverse regularisation c must be > 0, got {c}")
        self.c = c
        self.max_iter = max_iter
        self.weight: np.ndarray | None = None  # (C, D) on the raw embedding
        self.bias: np.ndarray | None = None    # (C,)

    def fit(self, x: np.ndarray, y: np.ndarray, n_classes: int) -> LinearProbe:
        """Fit on rows of `x` (N, D) with labels `y` (N,) in [0, n_classes); rows labelled -1
        (unlabelled) are ignored."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y)
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise ValueError(f"need x (N, D) and y (N,), got {x.shape} and {y.shape}")
        keep = y >= 0
        x, y = x[keep], y[keep].astype(np.int64)
        if len(y) == 0:
            raise ValueError("no labelled rows to fit the probe on")
        if y.max() >= n_classes:
            raise ValueError(f"label {y.max()} out of range for {n_classes} classes")
        if not np.all(np.isfinite(x)):
            raise ValueError("embeddings hold NaN or inf")
        mean = x.mean(axis=0)
        # Floor the scale at 1 % of the typical feature's: a (nearly) constant embedding dimension
        # would otherwise get a weight ~1/std in the folded head, which turns float rounding of
        # the exported graph into visible changes of the probabilities.
        std = x.std(axis=0)
        std = np.maximum(std, 1e-2 * float(np.median(std)) + 1e-8)
        z = (x - mean) / std
        classes = np.unique(y)
        w_full = np.zeros((n_classes, x.shape[1]))
        b_full = np.full(n_classes, _ABSENT_BIAS)
        if len(classes) == 1:
            b_full[classes[0]] = 0.0
        else:
            # One BLAS thread: OpenBLAS threads spinning against torch's OpenMP threads on a
            # busy machine made this fit ~50x slower; the problem is small anyway.
            with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
                # stopping at max_iter still gives a usable probe; the cap bounds the time
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = LogisticRegression(C=self.c, max_iter=self.max_iter).fit(z, y)
            coef, intercept = model.coef_, model.intercept_
            if len(classes) == 2:  # sklearn's binary form: one row for the second class
                coef = np.stack([-coef[0] / 2, coef[0] / 2])
                intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
            w_full[classes] = coef
            b_full[classes] = intercept
        # fold the standardisation: w . (x - m) / s + b = (w / s) . x + (b - (w / s) . m)
        self.weight = (w_full / std).astype(np.float32)
        self.bias = (b_full - (w_full / std) @ mean).astype(np.float32)
        return self

    def _logits(self, x: np.ndarray) -> np.ndarray:
        if self.weight is None or self.bias is None:
            raise RuntimeError("probe is not fitted")
        return np.asarray(x, dtype=np.float32) @ self.weight.T + self.bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        logits = self._logits(x).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._logits(x).argmax(axis=1)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Fraction of labelled rows (y >= 0) predicted right, in [0, 1]."""
        y = np.asarray(y)
        keep = y >= 0
        if not keep.any():
            raise ValueError("no labelled rows to score")
        return float((self.predict(np.asarray(x)[keep]) == y[keep]).mean())

    def head(self) -> dict[str, np.ndarray]:
        """The checkpoint's action head: {"weight": (C, D) float32, "bias": (C,) float32}."""
        if self.weight is None or self.bias is None:
            raise RuntimeError("probe is not fitted")
        return {"weight": self.weight.copy(), "bias": self.bias.copy()}
