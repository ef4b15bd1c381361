"""A minimal complete lmgc stage plugin: ``negate`` flips the sign bit of every float.

Lossless (its own inverse), exact for NaN payloads, infinities and -0.0 because it works on the
bits, and byte-order safe because it reads them through ``native()``: stages receive the
caller's byte order. Install it with ``[project.entry-points.lmgc] negate = "negate_stage"``.
"""

from __future__ import annotations

import numpy as np

from lmgc_core.components.hookspecs import hookimpl
from lmgc_core.components.interfaces import JSON, Stage
from lmgc_core.util.bytes_layout import native
from lmgc_core.util.dtypes import is_float


def _flip_sign(part: np.ndarray) -> np.ndarray:
    values = native(part)  # same values in this machine's byte order, so bits mean the same
    bits = values.view(f"u{values.dtype.itemsize}")
    sign = np.array(1 << (8 * values.dtype.itemsize - 1), dtype=bits.dtype)
    return (bits ^ sign).view(values.dtype)


class NegateStage(Stage):
    name = "negate"
    lossless = True  # decoding returns the input bit for bit

    def get_config(self) -> JSON:
        return {}  # no options

    def forward(self, parts: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], JSON]:
        out = {k: _flip_sign(v) if is_float(v.dtype) else v for k, v in parts.items()}
        return out, {}  # the state (JSON) would hold what inverse needs

    def inverse(self, parts: dict[str, np.ndarray], state: JSON) -> dict[str, np.ndarray]:
        return self.forward(parts)[0]


@hookimpl
def register_stages(register):
    register("negate", NegateStage, description="flip the sign bit of every float (lossless)")
