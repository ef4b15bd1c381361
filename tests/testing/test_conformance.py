"""Every built-in component passes the conformance kit that third-party plugins use."""

from __future__ import annotations

import importlib.util

import pytest

from lmgc_core.components import registry
from lmgc_core.testing import check_coder, check_prior, check_serializer, check_stage

CHECKS = {
    "serializer": check_serializer,
    "prior": check_prior,
    "coder": check_coder,
    "stage": check_stage,
}

# The one list of built-in components the kit runs on: (kind, name or spec, kit options).
# A new built-in component goes here (test_every_builtin_is_checked fails until it does).
BUILTINS = [
    ("serializer", "hex", {}),
    (
        "serializer",
        {
            "name": "hex",
            "bytes_per_group": 2,
            "separator": ",",
            "prefix": "0x",
            "byte_order": "little",
        },
        {},
    ),
    ("serializer", {"name": "hex", "bytes_per_group": 0, "separator": ""}, {}),
    ("serializer", "iso", {}),
    ("prior", "uniform", {"batch_independent": True}),
    ("prior", "adaptive", {}),
    ("prior", "float", {}),  # level 1, the default
    ("prior", {"name": "float", "layout": [[4, 8], [8]], "block_values": 64}, {}),
    # level 2 leaves its level out of get_config (recorded_defaults): the kit replays it at 2
    ("prior", {"name": "float", "level": 2}, {}),
    ("prior", {"name": "float", "layout": [[4, 8], [8]], "block_values": 64, "level": 2}, {}),
    (
        "prior",
        {"name": "adaptive", "initial": 0.5, "limit": 4096},
        {"config": {"serializer": "iso"}},
    ),
    (
        "prior",
        {"name": "mix", "experts": [{"name": "float"}, {"name": "adaptive", "consult": [0, 1]}]},
        # fallback picks which stream is kept; a fallback stream's header names the expert itself
        {"fingerprint_covers": {"model": "experts", "fallback": "prior"}},
    ),
    ("coder", "range", {}),
    ("stage", "quantize", {}),
    ("stage", {"name": "quantize", "bits": 1}, {}),
    ("stage", {"name": "quantize", "bits": 12}, {}),
    ("stage", "sparsify", {}),
    ("stage", {"name": "sparsify", "keep": 0.3, "method": "random", "seed": 5}, {}),
    ("stage", {"name": "sparsify", "keep": 0.5, "index_format": "delta"}, {}),
]

# LM priors: machine-bound, checked with tiny inputs only. ``model`` is a path (its hash is the
# fingerprint's ``model_sha256``) and ``unmapped`` is part of ``token_map``.
LM_COVERS = {"model": "model_sha256", "unmapped": "token_map"}
LM_PRIORS = [
    pytest.param(
        "transformers",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("torch") is None, reason="torch not installed"
        ),
    ),
    pytest.param(
        "llamacpp",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed"
        ),
    ),
]


def _id(value) -> str:
    return value if isinstance(value, str) else "-".join(f"{k}={v}" for k, v in value.items())


@pytest.mark.parametrize(("kind", "spec", "options"), BUILTINS, ids=lambda v: _id(v) if v else "")
def test_builtin_passes_the_kit(kind, spec, options):
    passed = CHECKS[kind](spec, **options)
    assert "same streams in a fresh process" in passed and "CLI round trip" in passed


def test_every_builtin_is_checked():
    checked = {
        (kind, spec if isinstance(spec, str) else spec["name"]) for kind, spec, _ in BUILTINS
    }
    lm = {("prior", p.values[0]) for p in LM_PRIORS}
    builtin = {
        key
        for key, reg in registry.registrations().items()
        if reg.distribution == registry.CORE_DISTRIBUTION
    }
    assert builtin - checked - lm == set(), "add these built-ins to BUILTINS"


@pytest.mark.lm
@pytest.mark.parametrize("name", LM_PRIORS)
def test_lm_prior_passes_the_kit_on_tiny_inputs(name):
    passed = check_prior({"name": name, "threads": 1}, small=True, fingerprint_covers=LM_COVERS)
    assert "same scores in a fresh process" in passed
