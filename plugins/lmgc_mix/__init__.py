"""lmgc plugin: the ``mix`` prior, a mixture of any priors ("experts") that codes within a few
bits per window of the best of them.

Options (``{"name": "mix", ...}``):

* ``experts``: a list of prior configs, e.g. ``[{"name": "llamacpp"}, {"name": "float"}]``; an
  entry may add ``consult``: the digit positions (0 = first data symbol of a group) at which the
  expert is asked (default: all). Skipped symbols reach the expert in its next call; a position
  no expert is asked at is coded uniform (4 bits a hex digit).
* ``share``: fixed-share rate of the Bayes weights (default ``2**-10``);
* ``lr``: learning rate of the geometric mixture's weights (default 0.02);
* ``geometric``: also mix the experts geometrically (a learned tempered product), default true;
* ``uniform``: also mix in the uniform distribution, default true (the mixture then never costs
  more than the raw digits plus a few bits per window);
* ``model``: decode-time override of the model path of every expert that has one;
* ``fallback``: default true: the pipeline also codes the input with the first expert that codes
  whole arrays (``float``) and keeps that stream when it is not larger. Its header then names that
  expert alone, so it decodes without the language model. False: always the mixture's stream.
"""

from __future__ import annotations

from typing import Any

from lmgc_core.components.factories import lazy
from lmgc_core.components.hookspecs import hookimpl


@hookimpl
def register_priors(register: Any) -> None:
    register(
        "mix",
        lazy("lmgc_mix.prior:MixPrior"),
        description=(
            "mixture of experts (any priors, e.g. an LM and the float prior), never more than "
            "a few bits per window worse than the best expert"
        ),
    )
