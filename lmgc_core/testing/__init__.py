"""Conformance kit for lmgc plugins: import it in your plugin's own tests.

    from lmgc_core.testing import check_prior, check_stage

    def test_laplace_prior():
        check_prior({"name": "laplace", "scale": 2.0}, batch_independent=True)

    def test_negate_stage():
        check_stage("negate")

Each ``check_*`` builds the component through the registry (so it must be installed, or added
with :func:`lmgc_core.components.registry.add_plugin` in a test), then checks the plugin contract:
the
registered name equals the class's ``name``; ``get_config()`` is JSON, lists every constructor
option and rebuilds an equal component; for priors, deliberate ``default_window`` /
``default_batch_size``, a fingerprint that covers every option, valid scores, and the same scores
for the same calls (across sessions, instances, threads, batch layouts when claimed, and a fresh
process); for stages, IEEE specials and both byte orders; and bit-exact round trips through the
``Pipeline``, ``lmgc_core.decompress``, the numcodecs codec and the ``lmgc`` CLI, with identical
streams in a fresh process. A failure raises :class:`ConformanceError` (an ``AssertionError``)
that names the component, its plugin and the rule. See docs/plugins.md.
"""

from __future__ import annotations

from lmgc_core.testing._common import ConformanceError
from lmgc_core.testing.priors import check_prior
from lmgc_core.testing.samples import gradients, sample_arrays, specials
from lmgc_core.testing.stages import check_stage
from lmgc_core.testing.symbols import check_coder, check_serializer

__all__ = [
    "ConformanceError",
    "check_coder",
    "check_prior",
    "check_serializer",
    "check_stage",
    "gradients",
    "sample_arrays",
    "specials",
]
