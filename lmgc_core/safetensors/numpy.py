"""``safetensors.numpy``'s ``save_file`` / ``load_file`` over lmgc archives."""

from __future__ import annotations

import os
from typing import Any

from lmgc_core.safetensors._read import SafeOpen
from lmgc_core.safetensors._write import array_item, save_items


def save_file(
    tensors: dict[str, Any],
    filename: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    pipeline: Any = None,
    jobs: int = 0,
) -> None:
    """Write ``tensors`` (name -> numpy array; bfloat16 and float8 from ml_dtypes) as an lmgc
    archive of a ``.safetensors`` file."""
    items = {name: array_item(name, value) for name, value in tensors.items()}
    save_items(items, filename, metadata, pipeline, jobs)


def load_file(filename: str | os.PathLike, jobs: int = 0) -> dict[str, Any]:
    """Every tensor of an lmgc archive as numpy arrays."""
    with SafeOpen(filename, "np", jobs=jobs) as f:
        return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
