"""Reading and writing the array files the CLI accepts: .npy, .npz, .safetensors and raw bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError


def load_arrays(path: Path, dtype: str | None = None) -> dict[str, np.ndarray] | np.ndarray:
    """A single array (``.npy``, raw) or a name -> array mapping (``.npz``, ``.safetensors``)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise ConfigError("reading .safetensors needs: pip install safetensors") from None
        return load_file(str(path))
    if dtype is None:
        raise ConfigError(f"{path.name}: raw input needs --dtype (e.g. float32)")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ConfigError(f"unknown --dtype {dtype!r}") from None
    raw = path.read_bytes()
    if len(raw) % dt.itemsize:
        raise ConfigError(f"{path.name}: {len(raw)} bytes is not a whole number of {dt} items")
    return np.frombuffer(raw, dtype=dt)


def save_arrays(path: Path, data: dict[str, np.ndarray] | np.ndarray) -> None:
    suffix = path.suffix.lower()
    if isinstance(data, dict):
        if suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file(data, str(path))
        elif suffix == ".npz":
            np.savez(path, **data)
        else:
            raise ConfigError(
                f"{path.name}: an archive of several arrays decompresses to .npz or .safetensors"
            )
        return
    if suffix == ".npy":
        np.save(path, data, allow_pickle=False)
    elif suffix == ".npz":
        np.savez(path, data=data)
    else:
        path.write_bytes(np.ascontiguousarray(data).tobytes())
