"""A bad ``jobs`` given to the API is the caller's bad option, an LMGCError (ConfigError) like
every other: it escaped Pipeline.compress and lmgc_core.decompress as a bare ValueError."""

from __future__ import annotations

import numpy as np
import pytest

import lmgc_core
from lmgc_core import ConfigError, Pipeline


@pytest.mark.parametrize("jobs", [-1, 2.0, "2", True])
def test_a_bad_jobs_is_a_config_error_for_compress_and_decompress(jobs: object) -> None:
    data = np.linspace(-1, 1, 256, dtype=np.float32)
    pipeline = Pipeline.from_config({})
    blob = pipeline.compress(data)
    with pytest.raises(ConfigError, match="jobs must be a non-negative integer"):
        pipeline.compress(data, jobs=jobs)
    with pytest.raises(ConfigError, match="jobs must be a non-negative integer"):
        lmgc_core.decompress(blob, jobs=jobs)
    assert lmgc_core.decompress(blob, jobs=2).tobytes() == data.tobytes()
