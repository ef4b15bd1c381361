"""Built-in entropy coder: a range coder from ``constriction`` (queue/FIFO variant, so symbols
are decoded in the order they were encoded, one step at a time)."""

from __future__ import annotations

from lmgc_core.components.factories import lazy
from lmgc_core.components.hookspecs import hookimpl


@hookimpl
def register_coders(register):
    register(
        "range",
        lazy("lmgc_range_coder.coder:RangeCoder"),  # constriction: imported when a coder is built
        requires=("constriction",),
        install_hint="pip install constriction",
        description="constriction range coder, 32-bit words, 24-bit probability precision",
    )
