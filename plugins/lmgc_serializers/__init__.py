"""Built-in serializers: hexadecimal text (the paper's H_s, H_n, H_c... layouts) and ISO-8859-1.

This module is also the smallest complete example of an lmgc plugin: a module listed under the
``lmgc`` entry-point group that implements ``register_serializers``.
"""

from __future__ import annotations

from lmgc_core.components.hookspecs import hookimpl


@hookimpl
def register_serializers(register):
    from .hex import HexSerializer
    from .iso import IsoSerializer

    register(
        "hex",
        HexSerializer,
        description="hex digits of the raw bits, grouped, with separators (paper: H_s, H_n, H_c)",
    )
    register("iso", IsoSerializer, description="one ISO-8859-1 symbol per byte (paper: ISO)")
