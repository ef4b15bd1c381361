"""A minimal complete lmgc prior plugin: ``laplace`` expects low symbol indices.

Symbol ``i`` of the alphabet scores ``-scale * i`` (a discrete Laplace law over the alphabet's
order, so hex digit ``0`` is the likeliest): no context, one shared row for every window.
Install it as a package whose pyproject.toml has
``[project.entry-points.lmgc] laplace = "laplace_prior"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmgc_core.components.hookspecs import hookimpl
from lmgc_core.components.interfaces import JSON, Prior, PriorSession
from lmgc_core.util.errors import ConfigError


class _Session(PriorSession):
    def __init__(self, scores: np.ndarray) -> None:
        self._scores = scores  # (1, A): one row serves every window of the batch

    def start(self, prefix: np.ndarray) -> np.ndarray:
        return self._scores

    def advance(self, symbols: np.ndarray) -> np.ndarray:
        return self._scores


class LaplacePrior(Prior):
    name = "laplace"  # the registered name: streams record it
    default_window = 512  # no context is used, so short windows cost nothing
    default_batch_size = 4096  # many rows per step share one distribution: fast

    def __init__(self, scale: float = 0.5) -> None:
        if not isinstance(scale, int | float) or not scale >= 0:
            raise ConfigError(f"laplace: scale must be a number >= 0, not {scale!r}")
        self.scale = float(scale)

    def get_config(self) -> JSON:
        return {"scale": self.scale}  # every constructor option

    def fingerprint(self) -> JSON:  # every option, plus a version bumped when the maths change
        return {"prior": self.name, "version": 1, "scale": self.scale}

    def open(
        self, alphabet: Sequence[bytes], batch_size: int, window: int, pattern=(-1,)
    ) -> PriorSession:
        scores = -self.scale * np.arange(len(alphabet), dtype=np.float64)  # exact IEEE ops
        return _Session(scores[None, :])


@hookimpl
def register_priors(register):
    register("laplace", LaplacePrior, description="discrete Laplace over the alphabet order")
