"""Built-in lossy pre-stages: ``quantize`` (linear n-bit, or 1-bit SignSGD) and ``sparsify``
(top-k or random-k).

Both follow the LM-GC paper's Section 5 experiments (Figure 4): the stage output is what lmgc
then compresses losslessly, so ``decompress(compress(x))`` returns exactly the stage's own
reconstruction ``inverse(forward(x))``, bit for bit. See ``docs/pipelines.md``.
"""

from __future__ import annotations

from lmgc_core.components.hookspecs import hookimpl


@hookimpl
def register_stages(register):
    from .quantize import QuantizeStage
    from .sparsify import SparsifyStage

    register(
        "quantize",
        QuantizeStage,
        description="linear n-bit quantization to uint8/uint16 indices (bits=1: SignSGD)",
    )
    register(
        "sparsify",
        SparsifyStage,
        description="keep a fraction of entries (top-k by magnitude or seeded random-k)",
    )
