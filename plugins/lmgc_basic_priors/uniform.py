"""The uniform prior: costs log2(alphabet) bits per data symbol, whatever the data."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmgc_core.components.interfaces import JSON, Prior, PriorSession


class _UniformSession(PriorSession):
    def __init__(self, size: int) -> None:
        self._scores = np.zeros((1, size))

    def start(self, prefix: np.ndarray) -> np.ndarray:
        return self._scores

    def advance(self, symbols: np.ndarray) -> np.ndarray:
        return self._scores


class UniformPrior(Prior):
    name = "uniform"
    default_batch_size = 8192
    default_window = 512
    thread_safe = True  # every open() builds its own session; the prior itself is read-only

    def get_config(self) -> JSON:
        return {}

    def fingerprint(self) -> JSON:
        return {"prior": "uniform", "version": 1}

    def open(
        self,
        alphabet: Sequence[bytes],
        batch_size: int,
        window: int,
        pattern: Sequence[int] = (-1,),
    ) -> PriorSession:
        return _UniformSession(len(alphabet))
