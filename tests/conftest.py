"""Shared fixtures: real gradients (a committed slice of shared/data/mlp_digits_grads.npy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def grads() -> np.ndarray:
    """8,192 real float32 gradients of a small MLP trained on scikit-learn digits (25% zeros)."""
    return np.load(DATA / "mlp_grads_8k.npy")


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact equality (NaN payloads and -0.0 included) plus dtype and shape."""
    a, b = np.asarray(a), np.asarray(b)
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    )
