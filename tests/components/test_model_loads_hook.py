"""Model-load counting is a hook (``model_loads``) any plugin can implement, not a scan of
``sys.modules`` for a function name: a third-party prior's counts show up next to the LM priors'."""

from __future__ import annotations

import subprocess
import sys

from lmgc_core.codecs.numcodecs_codec import pipeline_cache_info
from lmgc_core.components import registry
from lmgc_core.components.hookspecs import hookimpl


class _Counting:
    @hookimpl
    def model_loads(self) -> dict[str, int]:
        return {"third-party-prior": 3}


class _Broken:
    @hookimpl
    def model_loads(self) -> dict[str, int]:
        raise RuntimeError("a broken plugin")


def test_a_third_party_plugin_joins_and_a_broken_one_is_left_out() -> None:
    plugins = [_Counting(), _Broken()]
    for plugin in plugins:
        registry.add_plugin(plugin, label=f"{type(plugin).__name__} 0.0")
    try:
        loads = pipeline_cache_info()["model_loads"]
        assert loads["third-party-prior"] == 3
        assert loads.get("lmgc_llamacpp", 0) >= 0 and loads.get("lmgc_transformers", 0) >= 0
    finally:
        for plugin in plugins:
            registry.remove_plugin(plugin)
    assert "third-party-prior" not in registry.model_loads()


def test_the_lm_plugins_count_without_importing_their_backends() -> None:
    code = (
        "import sys; from lmgc_core.components import registry; "
        "loads = registry.model_loads(); "
        "assert loads['lmgc_llamacpp'] == 0 and loads['lmgc_transformers'] == 0, loads; "
        "assert 'llama_cpp' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
