"""A real training series for the delta tests: an MLP trained by SGD on scikit-learn's digits."""

from __future__ import annotations

import numpy as np


def sgd_snapshots(steps: int, every: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fc1.weight, fc2.weight)`` of a 64-256-10 MLP after every ``every`` SGD steps."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    onehot = np.eye(10, dtype=np.float32)[y]
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((64, 256)) / 8).astype(np.float32)
    w2 = (rng.standard_normal((256, 10)) / 16).astype(np.float32)
    out = []
    for step in range(steps * every):
        idx = rng.integers(0, len(x), 32)
        h = np.maximum(x[idx] @ w1, 0)
        z = h @ w2
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot[idx]) / 32
        gh = (g @ w2.T) * (h > 0)
        w1 -= 0.05 * (x[idx].T @ gh)
        w2 -= 0.05 * (h.T @ g)
        if step % every == every - 1:
            out.append((w1.copy(), w2.copy()))
    return out
