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


def test_a_bad_jobs_is_refused_for_a_prior_that_runs_on_one_thread(monkeypatch) -> None:
    """A prior that is not thread-safe (a language model's) runs on one thread whatever
    ``jobs`` asks, and a bad ``jobs`` went unchecked there, silently taken for 1."""
    data = np.linspace(-1, 1, 256, dtype=np.float32)
    pipeline = Pipeline.from_config({})
    blob = pipeline.compress(data)
    monkeypatch.setattr(type(pipeline.prior), "thread_safe", False)
    with pytest.raises(ConfigError, match="jobs must be a non-negative integer"):
        pipeline.compress(data, jobs=-1)
    with pytest.raises(ConfigError, match="jobs must be a non-negative integer"):
        pipeline.decompress(blob, jobs="2")
    assert pipeline.decompress(blob, jobs=2).tobytes() == data.tobytes()
