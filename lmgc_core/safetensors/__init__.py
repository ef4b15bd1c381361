"""The safetensors API (``save_file``, ``load_file``, ``safe_open``) over lmgc archives.

``lmgc_core.safetensors.torch`` and ``lmgc_core.safetensors.numpy`` mirror the ``safetensors``
package's modules of the same names; what they write is the archive ``lmgc compress`` writes for a
``.safetensors`` file (so ``lmgc decompress`` gives that file back), and they read any archive of
one. :func:`safe_open` decodes a tensor only when asked, and only its own members.

The submodules are named like the real package's; inside them ``import torch`` and
``import numpy`` still mean the real libraries (absolute imports).
"""

from __future__ import annotations

from lmgc_core.safetensors._read import SafeOpen as safe_open
from lmgc_core.safetensors._read import TensorError

__all__ = ["TensorError", "safe_open"]
