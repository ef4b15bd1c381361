"""Options of the built-in priors and serializers: what a config may say, refused clearly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmgc_core import decompress
from lmgc_core.coding.pipeline import Pipeline
from lmgc_core.util.errors import ConfigError

BAD = [
    ("prior", {"name": "adaptive", "initial": math.inf}),  # headers are JSON: no Infinity
    ("prior", {"name": "adaptive", "initial": 1e308}),
    ("prior", {"name": "adaptive", "initial": True}),
    ("prior", {"name": "adaptive", "limit": math.inf}),  # was an OverflowError
    ("prior", {"name": "adaptive", "limit": 4096.0}),
    ("serializer", {"name": "hex", "bytes_per_group": 4.0}),  # was a TypeError when coding
    ("serializer", {"name": "hex", "bytes_per_group": True}),  # was taken as 1
]


@pytest.mark.parametrize(("role", "spec"), BAD, ids=lambda v: str(v))
def test_bad_option_values_are_config_errors(role, spec):
    with pytest.raises(ConfigError, match="must be"):
        Pipeline.from_config({role: spec})


def test_good_values_at_the_edges_round_trip():
    x = np.random.default_rng(0).standard_normal(300).astype(np.float32)
    for spec in ({"name": "adaptive", "initial": 2**20, "limit": 256}, {"name": "adaptive"}):
        pipe = Pipeline.from_config({"prior": spec})
        assert decompress(pipe.compress(x)).tobytes() == x.tobytes()
