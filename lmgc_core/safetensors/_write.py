"""Writing tensors as the lmgc archive of a ``.safetensors`` file (the real file's bytes are
laid out in a temporary file, then coded as ``lmgc compress`` codes it)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lmgc_core.files.folders import compress_stream
from lmgc_core.files.safetensors_file import header_bytes, numpy_dtype
from lmgc_core.files.segments import Tensor
from lmgc_core.util.dtypes import refuse_masked
from lmgc_core.util.errors import ConfigError


def source_name(path: str | os.PathLike) -> str:
    """The name the archive records for its source: ``x.safetensors`` for ``x.safetensors.lmgc``
    or ``x.lmgc``, so ``lmgc decompress`` names the file as a user expects."""
    name = Path(path).name
    if name.lower().endswith(".lmgc"):
        name = name[: -len(".lmgc")]
    return name if name.lower().endswith(".safetensors") else name + ".safetensors"


def save_items(
    items: dict[str, tuple[str, tuple[int, ...], bytes]],
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    pipeline: Any = None,
    jobs: int = 0,
) -> None:
    """``items``: name -> (safetensors tag, shape, bytes), laid out as the safetensors package
    lays them out (widest dtype first, then by name: every tensor stays aligned), so the file an
    archive rebuilds is the one ``safetensors.numpy.save_file`` writes."""
    if metadata is not None and not (
        isinstance(metadata, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise TypeError("metadata must map str to str")
    names = sorted(items, key=lambda name: (-_RANK.get(items[name][0], -1), name))
    tensors = []
    for name in names:
        tag, shape, data = items[name]
        tensor = Tensor(name, numpy_dtype(tag), tuple(shape), tag=tag, nbytes=len(data))
        tensors.append(tensor)
    head = header_bytes(tensors, metadata)
    from lmgc_core.files.outputs import atomic_output

    with tempfile.TemporaryFile() as src:
        src.write(head)
        for name in names:
            src.write(items[name][2])
        size = src.tell()
        src.seek(0)
        with atomic_output(os.fspath(path), True) as out:
            compress_stream(src, size, source_name(path), out, pipeline, None, jobs)


# fmt: off
_ORDER = (
    "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0",
    "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64",
    "F64", "I64", "U64",
)
# fmt: on
"""The order of the safetensors package's ``Dtype`` enum, whose widest members its writer puts
first."""
_RANK = {tag: rank for rank, tag in enumerate(_ORDER)}


def array_item(name: str, value: Any) -> tuple[str, tuple[int, ...], bytes]:
    from lmgc_core.files.safetensors_file import tag_of

    if not isinstance(value, np.ndarray):
        raise TypeError(f"tensor {name!r}: expected a numpy array, got {type(value).__name__}")
    try:
        refuse_masked(value)
    except ConfigError as exc:
        raise TypeError(f"tensor {name!r}: {exc}") from None
    arr = value
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    tag = tag_of(arr.dtype)
    if tag is None:
        raise TypeError(f"tensor {name!r}: safetensors has no dtype for {arr.dtype}")
    return tag, arr.shape, np.ascontiguousarray(arr).tobytes()
