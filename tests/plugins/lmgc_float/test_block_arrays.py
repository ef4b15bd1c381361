"""The segments of a level-1 part's blocks are remembered as read-only arrays
(``fast.block_arrays``, issue 20: a layout's segments cost ~2 us a block to convert on every
decode). What it returns is what the cut and the metadata's splits give, for each part in turn,
and splits the decoder refuses stay refused after equal-looking ones were remembered."""

from __future__ import annotations

import numpy as np
import pytest
from lmgc_float import fast
from lmgc_float.codec import seg_array
from lmgc_float.formats import segments

from lmgc_core import Pipeline, decompress
from lmgc_core.stream import container
from lmgc_core.util.errors import StreamError

LAYOUT = ((64, 32), (64,), (32, 32), (16,))


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(fast, "_ARRAYS", {})


def _want(shape, layout, block_values, splits=None):
    cuts, _ = segments(shape, layout, block_values)
    if splits is not None:
        cuts = fast.regroup(cuts, splits)
    return [seg_array(c).tolist() for c in cuts]


@pytest.mark.parametrize(
    ("shape", "block_values", "splits"),
    [
        ((3, 3152), 1 << 18, None),
        ((3, 3152), 1 << 18, [1]),
        ((3, 3152), 1 << 18, [2, 5]),
        ((3, 3152), 1 << 18, [1, 2, 3, 9]),
        ((3, 3152), 1000, None),
        ((3, 3152), 1000, [3]),
        ((2, 3152), 1 << 18, [1]),
    ],
)
def test_arrays_are_the_cut_regrouped_each_time(shape, block_values, splits):
    for _ in range(2):  # then from what was remembered
        for other in ([4], None):  # another part's in between
            fast.block_arrays((3, 3152), LAYOUT, 1 << 18, fast.NO_SPLITS if other is None
                              else other)  # fmt: skip
            got = fast.block_arrays(
                shape, LAYOUT, block_values, fast.NO_SPLITS if splits is None else splits
            )
            assert [a.tolist() for a in got] == _want(shape, LAYOUT, block_values, splits)
            assert all(a.dtype == np.int64 and not a.flags.writeable for a in got)


@pytest.mark.parametrize("bad", [[True], [1.0], (1,), [], None, [1, 1], [0], [99], "1", [[1]]])
def test_splits_regroup_refuses_stay_refused_after_good_ones(bad):
    shape = (3, 3152)
    fast.block_arrays(shape, LAYOUT, 1 << 18, [1])  # remembered under (.., (1,))
    with pytest.raises(StreamError):
        fast.block_arrays(shape, LAYOUT, 1 << 18, bad)


def _split_stream() -> tuple[np.ndarray, bytes]:
    """Two tensors of very different statistics: the encoder splits their block (``[1]``)."""
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(4096) * 1e-3).astype(np.float32)
    b = rng.integers(0, 1 << 20, 4096).astype(np.float32) * 1e6
    data = np.concatenate([a, b])
    config = {"prior": {"name": "float", "layout": [[4096], [4096]], "small_parts": "level"}}
    blob = Pipeline.from_config(config).compress(data)
    assert container.read_header(blob)[0]["parts"][0]["array"]["splits"] == [1]
    return data, blob


def test_a_stream_whose_splits_became_true_is_refused_after_the_real_one():
    data, blob = _split_stream()
    assert decompress(blob).tobytes() == data.tobytes()
    header, offset = container.read_header(blob)
    header["parts"][0]["array"]["splits"] = [True]
    with pytest.raises(StreamError, match="splits"):
        decompress(container.pack(header, []) + blob[offset:])
    assert decompress(blob).tobytes() == data.tobytes()


def test_only_the_last_parts_are_kept(monkeypatch):
    monkeypatch.setattr(fast, "CACHED_ARRAYS", 2)
    shapes = [(n, 3152) for n in (1, 2, 3, 4, 5)]
    for shape in shapes * 2:
        got = fast.block_arrays(shape, LAYOUT, 1000)
        assert [a.tolist() for a in got] == _want(shape, LAYOUT, 1000)
        assert len(fast._ARRAYS) <= 2
    assert list(fast._ARRAYS) == [(s, LAYOUT, 1000) for s in shapes[-2:]]
