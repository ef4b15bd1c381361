"""lmgc: lossless gradient compression with language models as priors for range coding.

``import lmgc_core`` is cheap: no torch, transformers or llama_cpp; plugins import those lazily.
"""

from __future__ import annotations

from .errors import (
    ChecksumError,
    ConfigError,
    LMGCError,
    MismatchError,
    PluginError,
    StreamError,
    TruncatedStreamError,
)
from .pipeline import Pipeline, compress, decompress, read_header

__version__ = "0.1.0"

__all__ = [
    "ChecksumError",
    "ConfigError",
    "LMGCError",
    "MismatchError",
    "Pipeline",
    "PluginError",
    "StreamError",
    "TruncatedStreamError",
    "__version__",
    "compress",
    "decompress",
    "read_header",
]
