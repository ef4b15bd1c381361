"""The pipelines ``lmgc_core.decompress`` builds from stream headers are kept, the most recently
used last, so a full cache drops the one used longest ago, not one just decoded again."""

from __future__ import annotations

import numpy as np

from lmgc_core import Pipeline, decompress
from lmgc_core.coding import pipeline


def test_a_full_cache_drops_the_least_recently_used_pipeline(grads, monkeypatch):
    monkeypatch.setattr(pipeline, "_RECORDED_PIPELINES", {})
    monkeypatch.setattr(pipeline, "MAX_RECORDED_PIPELINES", 2)
    data = np.asarray(grads[:512], dtype=np.float32)
    first, second, third = (
        Pipeline.from_config({"prior": {"name": "float", **options}}).compress(data)
        for options in ({"level": 1}, {"level": 2}, {"level": 1, "layout": [[16, 32]]})
    )
    for blob in (first, second):
        assert decompress(blob).tobytes() == data.tobytes()
    used_first = pipeline._RECORDED_PIPELINES.copy()
    assert len(used_first) == 2
    assert decompress(first).tobytes() == data.tobytes()  # a hit: now the most recent
    assert decompress(third).tobytes() == data.tobytes()  # the cache is full: one goes
    kept = pipeline._RECORDED_PIPELINES
    first_key, second_key = used_first
    assert first_key in kept and second_key not in kept
    assert kept[first_key] is used_first[first_key]  # reused, not built again
