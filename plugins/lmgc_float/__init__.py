"""Built-in prior ``float``: where the information in gradient and weight floats really is.

Registered through the ``lmgc`` entry point like any third-party prior. Its kernels are compiled
C (``_float_kernels.c``), built by ``pip install``.
"""

from __future__ import annotations

from lmgc_core.components.factories import lazy
from lmgc_core.components.hookspecs import hookimpl


@hookimpl
def register_priors(register):
    register(
        "float",
        lazy("lmgc_float.prior:FloatPrior"),
        requires=("lmgc_float._float_kernels",),
        install_hint="pip install -e . (or reinstall lmgc) with a C compiler",
        description="float fields (zero, sign, exponent, top mantissa) in row/column context; "
        "integers byte-wise; noise bits raw. Fast, portable (integer arithmetic)",
    )
