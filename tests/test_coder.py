"""The range coder on real data: exact, and close to the ideal code length."""

from __future__ import annotations

import numpy as np

from lmgc_core import Pipeline, read_header
from lmgc_core.probability import FLOOR, distributions


def test_coder_overhead_over_ideal_on_real_gradients(grads):
    """Measured overhead of the coder (payload bits minus sum of -log2 p) on 8,192 real gradients.

    The run prints the numbers; the bound is generous (1% + 64 bits per block) but would catch a
    coder that wastes bits (e.g. mis-quantized probabilities)."""
    pipe = Pipeline.from_config({"batch": 64})
    est = pipe.estimate(grads, teacher_forced=False)
    blob = pipe.compress(grads)
    header = read_header(blob)
    blocks = [b for part in header["parts"] for b in part["blocks"]]
    payload_bits = 8 * sum(size for size, _ in blocks)
    overhead = payload_bits - est["ideal_bits"]
    print(
        f"\nideal {est['ideal_bits']:.0f} bits, payload {payload_bits} bits, overhead "
        f"{overhead:.0f} bits ({100 * overhead / est['ideal_bits']:.3f}%), {len(blocks)} blocks, "
        f"container total {len(blob)} bytes ({100 * len(blob) / grads.nbytes:.2f}%)"
    )
    assert 0 <= overhead < 0.01 * est["ideal_bits"] + 64 * len(blocks)


def test_distributions_have_a_floor_and_sum_to_one():
    scores = np.array([[0.0, -1e9, 5.0, -np.inf + 1e300]])
    p = distributions(scores, np.arange(4))
    assert np.all(p >= FLOOR) and np.isclose(p.sum(), 1.0)
