"""Where the tests' files are, said once (tests live in folders that mirror the source tree)."""

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
"""``tests/``: ``data/``, ``fixtures/``, ``example_plugin/`` and the helpers."""
ROOT_DIR = TESTS_DIR.parent
"""The repository (``docs/``, ``scripts/``, ``lmgc_core/``, ``plugins/``)."""
