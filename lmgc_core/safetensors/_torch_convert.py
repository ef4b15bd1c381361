"""Decoded bytes as torch tensors (and back), dtype for dtype: bf16 stays bf16, no float32."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lmgc_core.files.segments import Tensor
from lmgc_core.util.errors import ConfigError

_TAGS = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
    "U16": getattr(torch, "uint16", None), "F16": torch.float16, "BF16": torch.bfloat16,
    "I32": torch.int32, "U32": getattr(torch, "uint32", None), "F32": torch.float32,
    "I64": torch.int64, "U64": getattr(torch, "uint64", None), "F64": torch.float64,
    "C64": torch.complex64,
    "F8_E4M3": getattr(torch, "float8_e4m3fn", None),
    "F8_E5M2": getattr(torch, "float8_e5m2", None),
    "F8_E4M3FNUZ": getattr(torch, "float8_e4m3fnuz", None),
    "F8_E5M2FNUZ": getattr(torch, "float8_e5m2fnuz", None),
    "F8_E8M0": getattr(torch, "float8_e8m0fnu", None),
    "F4": getattr(torch, "float4_e2m1fn_x2", None),  # two values a byte (packed_shape)
}  # fmt: skip
TORCH_TO_TAG = {v: k for k, v in _TAGS.items() if v is not None}


def torch_dtype(tensor: Tensor, arr: np.ndarray) -> torch.dtype | None:
    """The torch dtype of a decoded tensor: by its safetensors tag, else by its numpy dtype's
    name, which is torch's own for every dtype both have (``bfloat16``, ``complex128``,
    ``float8_e4m3fnuz``...; a table of some of them gave the rest back as flat bytes)."""
    if tensor.tag:
        return _TAGS.get(tensor.tag)
    found = getattr(torch, arr.dtype.newbyteorder("=").name, None)
    return found if isinstance(found, torch.dtype) else None


def packed_shape(shape: tuple[int, ...], nbytes: int) -> tuple[int, ...] | None:
    """The shape safetensors gives a packed ``F4`` tensor declared ``shape`` (torch's
    ``float4_e2m1fn_x2`` holds two values a byte: the last dimension halved), ``None`` where
    that does not hold ``nbytes`` bytes (it is then flat ``uint8`` bytes)."""
    if not shape or shape[-1] % 2:
        return None
    packed = (*shape[:-1], shape[-1] // 2)
    return packed if int(np.prod(packed, dtype=object)) == nbytes else None


def to_torch(arr: np.ndarray, tensor: Tensor, device: str = "cpu") -> torch.Tensor:
    """The array's bytes reinterpreted as the torch dtype (``torch.frombuffer``: no copy, no
    float32 detour). A safetensors dtype torch lacks (``F6_E2M3``...) comes as ``uint8``
    bytes; big-endian arrays are swapped to native order first. An array of a dtype no
    safetensors file holds (strings, dates, records of an ``.npz``) is refused: as flat bytes it
    would pass for a ``uint8`` tensor of another shape than ``get_slice`` gives."""
    dtype = torch_dtype(tensor, arr)
    shape = arr.shape
    if dtype is None and not tensor.tag:
        raise ConfigError(f"torch has no dtype for {arr.dtype}: read it with framework='np'")
    if dtype is not None and tensor.tag == "F4":
        shape = packed_shape(tensor.declared_shape or (), arr.nbytes)
        dtype = dtype if shape is not None else None
    if dtype is None:
        dtype, shape = torch.uint8, (arr.nbytes,)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    arr = np.ascontiguousarray(arr)
    if arr.nbytes == 0:
        out = torch.empty(shape, dtype=dtype)
    else:
        out = torch.frombuffer(arr.reshape(-1).view(np.uint8), dtype=dtype).reshape(shape)
    return out if device == "cpu" else out.to(device)


def tensor_bytes(value: Any) -> tuple[str, tuple[int, ...], bytes]:
    """``(safetensors tag, shape, C-order little-endian bytes)`` of a torch tensor."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(value).__name__}")
    tag = TORCH_TO_TAG.get(value.dtype)
    if tag is None:
        raise TypeError(f"safetensors has no dtype for {value.dtype}")
    if value.layout != torch.strided or value.device.type == "meta":  # no values to save
        raise TypeError(f"a {value.layout} tensor on {value.device} has no dense values to save")
    # a conjugate or negative view holds valid values: resolved, not refused with torch's error
    t = value.detach().resolve_conj().resolve_neg().to("cpu").contiguous()
    data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return tag, tuple(t.shape), data
