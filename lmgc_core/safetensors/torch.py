"""``safetensors.torch``'s ``save_file`` / ``load_file`` over lmgc archives. bf16 tensors are
written and read as their bytes: no float32 detour."""

from __future__ import annotations

import os
from typing import Any

from lmgc_core.safetensors._read import SafeOpen
from lmgc_core.safetensors._torch_convert import tensor_bytes
from lmgc_core.safetensors._write import save_items


def save_file(
    tensors: dict[str, Any],
    filename: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    pipeline: Any = None,
    jobs: int = 0,
) -> None:
    """Write ``tensors`` (name -> torch.Tensor) as an lmgc archive of a ``.safetensors``
    file; ``pipeline`` (a :class:`lmgc_core.Pipeline`) defaults to lmgc's default."""
    items = {}
    for name, value in tensors.items():
        try:
            items[name] = tensor_bytes(value)
        except TypeError as exc:
            raise TypeError(f"tensor {name!r}: {exc}") from None
    save_items(items, filename, metadata, pipeline, jobs)


def load_file(filename: str | os.PathLike, device: str = "cpu", jobs: int = 0) -> dict[str, Any]:
    """Every tensor of an lmgc archive (``save_file``'s, or ``lmgc compress x.safetensors``'s);
    ``jobs`` threads decode (0: all cores, as the CLI)."""
    with SafeOpen(filename, "pt", device, jobs) as f:
        return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
