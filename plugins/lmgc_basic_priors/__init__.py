"""Built-in priors that need no model: ``uniform`` and ``adaptive`` (online counts).

They make the framework fast to test and are honest baselines for the LM priors.
"""

from __future__ import annotations

from lmgc_core.components.hookspecs import hookimpl


@hookimpl
def register_priors(register):
    from .adaptive import AdaptivePrior
    from .uniform import UniformPrior

    register("uniform", UniformPrior, description="every symbol equally likely (a baseline)")
    register(
        "adaptive",
        AdaptivePrior,
        description="online symbol counts per position within the group, shared by the batch",
    )
