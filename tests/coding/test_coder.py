"""The range coder on real data: exact, and close to the ideal code length."""

from __future__ import annotations

import numpy as np

from lmgc_core import Pipeline, decompress, read_header
from lmgc_core.coding.probability import FLOOR, distributions
from tests.conftest import same_bits


def test_coder_overhead_over_ideal_on_real_gradients(grads):
    """Measured overhead of the range coder (payload bits minus sum of -log2 p) on 8,192 real
    gradients, and the stream decodes to them bit for bit.

    The prior is step-coded (``adaptive`` over ``hex`` symbols), so every symbol goes through the
    range coder and ``estimate`` sums the very probabilities the coder was given; an array-coding
    prior (the default ``float``) has no separate ideal length, its "overhead" is 0 by definition.
    The run prints the numbers; the bound is generous (1% + 64 bits per block) but would catch a
    coder that wastes bits (e.g. mis-quantized probabilities)."""
    pipe = Pipeline.from_config(
        {"prior": "adaptive", "serializer": {"name": "hex"}, "coder": "range", "batch": 64}
    )
    est = pipe.estimate(grads, teacher_forced=False)
    assert est["method"] == "step"  # the step loop, not the prior's own array coding
    blob = pipe.compress(grads)
    header = read_header(blob)
    assert header["pipeline"]["coder"]["name"] == "range"
    assert header["pipeline"]["serializer"]["name"] == "hex"
    blocks = [b for part in header["parts"] for b in part["blocks"]]
    assert len(blocks) > 1  # batch 64 of 2,048-symbol windows over 73,728 symbols
    payload_bits = 8 * sum(size for size, _ in blocks)
    overhead = payload_bits - est["ideal_bits"]
    print(
        f"\nideal {est['ideal_bits']:.0f} bits, payload {payload_bits} bits, overhead "
        f"{overhead:.0f} bits ({100 * overhead / est['ideal_bits']:.3f}%), {len(blocks)} blocks, "
        f"container total {len(blob)} bytes ({100 * len(blob) / grads.nbytes:.2f}%)"
    )
    # a real coder pays a little (its final flush alone is at least one 32-bit word per block)
    assert 0 < overhead < 0.01 * est["ideal_bits"] + 64 * len(blocks)
    assert same_bits(decompress(blob), grads)


def test_distributions_have_a_floor_and_sum_to_one():
    scores = np.array([[0.0, -1e9, 5.0, -np.inf + 1e300]])
    p = distributions(scores, np.arange(4))
    assert np.all(p >= FLOOR) and np.isclose(p.sum(), 1.0)


def test_a_block_that_cannot_hold_what_its_header_declares_stops_early():
    """A header resealed to declare 80x the values of its one step-coded block: decoding went
    on for every declared symbol (garbage the prior predicts; a 178-byte LM stream declaring
    7,280 values ran for minutes) before the checksum failed. The decoded symbols' code length
    passes the block's bits after a few hundred of them, and decoding stops there."""
    import pytest

    from lmgc_core.coding.engine import FLUSH_SLACK_BITS
    from lmgc_core.stream import container
    from lmgc_core.util.errors import StreamError

    x = np.random.default_rng(5).standard_normal(64).astype(np.float32)
    blob = Pipeline.from_config({"prior": "adaptive"}).compress(x)
    assert same_bits(decompress(blob), x)  # the bound holds for the honest stream
    header, offset = container.read_header(blob)
    (part,) = header["parts"]
    count = 64 * 80
    header["array"]["shape"] = [count]
    part["count"], part["n_symbols"] = count, part["n_symbols"] * 80
    with pytest.raises(StreamError, match="more information than it holds") as caught:
        decompress(container.pack(header, []) + blob[offset:])
    spent = int(str(caught.value).split("(")[1].split(" bits")[0])
    # stopped within a step of the bound (90 windows, 20 bits a symbol at most), where all
    # 46,080 declared symbols would have counted ~100,000 bits
    assert spent <= 8 * (len(blob) - offset) + FLUSH_SLACK_BITS + 90 * 20
