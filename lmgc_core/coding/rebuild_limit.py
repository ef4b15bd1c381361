"""How many values a stage's inverse may rebuild while a stream decodes.

Why: a stage state in a header can declare any size (random-k's ``n`` regenerates its positions
in O(n) time and memory from a seed), and the header's CRC32 guards only against accidents. The
pipeline knows what the stream must decode to, so it bounds every rebuilt part by that: a part
may hold at most as many values as the array has bytes. No stage lmgc ships comes near it
(quantize rebuilds the array's own values, sparsify a part that held at most them), and it
leaves room for stages that split values into bytes. A stage calls :func:`check_rebuild` before
it allocates; outside a decode (``Pipeline.reconstruct``, a stage used on its own) there is no
limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from lmgc_core.util.errors import StreamError

_LIMIT: ContextVar[int | None] = ContextVar("lmgc_rebuild_limit", default=None)


@contextmanager
def rebuild_limit(values: int) -> Iterator[None]:
    """Within the block, :func:`check_rebuild` refuses parts of more than ``values`` values."""
    token = _LIMIT.set(int(values))
    try:
        yield
    finally:
        _LIMIT.reset(token)


def check_rebuild(count: object, who: str) -> int:
    """``count`` as an int, once it is a count of values that fits what the decoding stream
    declares; ``StreamError`` (naming ``who``) for anything else."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise StreamError(f"{who}: bad value count {count!r} in its stage state")
    limit = _LIMIT.get()
    if limit is not None and count > limit:
        raise StreamError(
            f"{who}: its stage state asks to rebuild {count:,} values, more than the "
            f"{limit:,} bytes the stream decodes to"
        )
    return count
