"""The fast kernel's decoding paths (AMD Zen 4's, AVX-512VL, AVX2, scalar: chosen at run time), one
at a time, for tests that check every path rebuilds the same bits."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from lmgc_float import fast

PATHS = {"zen": (True, True, True), "avx512": (True, True, False), "avx2": (True, False, False),
         "scalar": (False, False, False)}
"""(simd, avx512, zen) of each path"""


@contextlib.contextmanager
def kernel_path(name: str) -> Iterator[bool]:
    """The kernel switched to one path; False where the CPU (or build) lacks it (the scalar
    path is always there). The previous settings come back afterwards."""
    k = fast.kernel()
    simd, wide, zen = PATHS[name]
    was = k.simd(), k.avx512(), k.zen()
    try:
        yield k.simd(simd) == simd and k.avx512(wide) == wide and k.zen(zen) == zen
    finally:
        k.simd(was[0]), k.avx512(was[1]), k.zen(was[2])
