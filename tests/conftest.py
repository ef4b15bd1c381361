"""Shared fixtures: real gradients (a committed slice of shared/data/mlp_digits_grads.npy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmgc_core.util.bytes_layout import same_bits  # noqa: F401  (tests import it from here)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def grads() -> np.ndarray:
    """8,192 real float32 gradients of a small MLP trained on scikit-learn digits (25% zeros)."""
    return np.load(DATA / "mlp_grads_8k.npy")


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mlp_digits_grads.npy"


@pytest.fixture(scope="session")
def mlp_rows(grads) -> np.ndarray:
    """Whole parameter vectors (85,002 floats: the shared MLP's state_dict order) for tests that
    need the tensor layout: two snapshots from ``../shared`` when it is there, else the committed
    slice tiled (the layout then still applies, with less structure)."""
    if SHARED.exists():
        return np.load(SHARED)[:2]
    return np.resize(grads, (2, 85002)).astype(np.float32)
