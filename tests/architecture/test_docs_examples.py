"""The minimal prior and stage of docs/plugins.md are real, complete and conformant."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from lmgc_core import Pipeline
from lmgc_core.components import registry
from lmgc_core.testing import check_prior, check_stage, specials
from tests.conftest import same_bits
from tests.paths import ROOT_DIR

DOCS = ROOT_DIR / "docs"
EXAMPLES = ["laplace_prior", "negate_stage"]


@pytest.fixture
def examples(monkeypatch):
    """The examples registered as plugins, importable by name (the kit's fresh process
    imports them again)."""
    monkeypatch.syspath_prepend(str(DOCS / "examples"))
    modules = [importlib.import_module(name) for name in EXAMPLES]
    for module in modules:
        registry.add_plugin(module)
    yield modules
    for module in modules:
        registry.remove_plugin(module)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_is_short_and_quoted_verbatim_in_the_docs(name):
    source = (DOCS / "examples" / f"{name}.py").read_text()
    assert len(source.splitlines()) < 60
    assert f"```python\n{source}```" in (DOCS / "plugins.md").read_text()


def test_examples_pass_the_kit(examples):
    check_prior({"name": "laplace", "scale": 0.25}, batch_independent=True)
    check_stage("negate")


def test_examples_compose_in_a_pipeline(examples):
    data = np.concatenate([np.linspace(-2, 2, 300, dtype=np.float32), specials("<f4")])
    pipe = Pipeline.from_config({"prior": "laplace", "stages": ["negate"]})
    blob = pipe.compress(data.astype(">f4"))
    assert same_bits(pipe.decompress(blob), data.astype(">f4"))
