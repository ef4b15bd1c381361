"""A minimal third-party lmgc plugin: one prior that works, one whose dependency is missing.

``zeros-favoured`` is a static prior that expects the digit ``0`` more often than the others
(gradients are full of zero bytes); ``needs-missing`` shows how a plugin with an absent optional
dependency is listed as unavailable instead of breaking discovery.
"""

from __future__ import annotations

import numpy as np

from lmgc_core.components.hookspecs import hookimpl
from lmgc_core.components.interfaces import Prior, PriorSession


class _StaticSession(PriorSession):
    def __init__(self, scores: np.ndarray) -> None:
        self._scores = scores[None, :]

    def start(self, prefix):
        return self._scores

    def advance(self, symbols):
        return self._scores


class ZerosFavouredPrior(Prior):
    name = "zeros-favoured"
    default_window = 512  # no context: short windows cost nothing
    default_batch_size = 1024

    def __init__(self, weight: float = 4.0) -> None:
        self.weight = float(weight)

    def get_config(self):
        return {"weight": self.weight}

    def fingerprint(self):
        return {"prior": self.name, "weight": self.weight}

    def open(self, alphabet, batch_size, window, pattern=(-1,)):
        scores = np.zeros(len(alphabet))
        scores[[i for i, s in enumerate(alphabet) if s == b"0"]] = np.log(self.weight)
        return _StaticSession(scores)


class NeedsMissingPrior(ZerosFavouredPrior):
    name = "needs-missing"  # a class's name must equal the name it is registered under


@hookimpl
def register_priors(register):
    register("zeros-favoured", ZerosFavouredPrior, description="static prior favouring '0'")
    register(
        "needs-missing",
        NeedsMissingPrior,
        requires=("lmgc_example_dependency_that_is_not_installed",),
        install_hint="pip install lmgc-example-extra",
        description="shows how an unavailable plugin is reported",
    )
