"""The ``lmgc`` command: its commands and the options that build a pipeline. Only ``__main__``
and the conformance kit sit above it.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    """``lmgc_core.cli.main`` as before the subpackages, imported on first use."""
    if name == "main":
        from lmgc_core.cli.commands import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
