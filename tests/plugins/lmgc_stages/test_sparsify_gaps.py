"""sparsify's gap list (``index_format="delta"``) past 2^32 entries: a gap that does not fit
uint32 was truncated, and the kept values came back at the wrong positions with exit 0 (the
stream's checksum covers the reconstruction of the parts as written)."""

from __future__ import annotations

import numpy as np
import pytest
from lmgc_stages import sparsify

from lmgc_core.util.errors import StreamError


@pytest.mark.parametrize("gap", [(1 << 32) - 1, 1 << 32, (1 << 32) + 9, (1 << 40) + 3])
def test_gaps_of_any_size_come_back(gap):
    idx = np.array([0, 1 + gap, 5 + gap], dtype=np.int64)  # the second kept 'gap' after the first
    gaps = sparsify._encode_delta(idx)
    assert gaps.dtype == (np.uint32 if gap < 1 << 32 else np.uint64)
    assert sparsify._decode_delta(gaps, int(idx[-1]) + 1).tolist() == idx.tolist()
    first = np.array([gap], dtype=np.int64)  # the first gap is the first index itself
    assert sparsify._decode_delta(sparsify._encode_delta(first), gap + 1).tolist() == [gap]


def test_a_gap_past_the_tensor_is_refused():
    with pytest.raises(StreamError, match="a gap of"):
        sparsify._decode_delta(np.array([2**63 + 5], dtype=np.uint64), 100)
