"""Reading tensors out of an lmgc archive one at a time (:class:`SafeOpen`)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from lmgc_core.files.archive import ArchiveReader
from lmgc_core.files.filecodec import ArchiveDecoder, StreamDecoder
from lmgc_core.files.safetensors_file import as_tagged, tagged_values
from lmgc_core.files.segments import Tensor
from lmgc_core.util.errors import ConfigError, LMGCError, OutOfMemoryError, StreamError

FRAMEWORKS = ("pt", "torch", "np", "numpy")


class TensorError(LMGCError, KeyError):
    """A tensor the archive does not hold (also a ``KeyError``, as for a dict)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class SafeOpen:
    """``safetensors.safe_open`` for an lmgc archive: the manifest is read (and checked) when
    opened; ``get_tensor(name)`` decodes that tensor's members only, so its time grows with the
    tensor's size, not the archive's. Use as a context manager or call :meth:`close`."""

    def __init__(
        self, filename: str | os.PathLike, framework: str = "pt", device: str = "cpu",
        jobs: int = 0,
    ) -> None:  # fmt: skip
        if framework not in FRAMEWORKS:
            raise ValueError(f"framework must be one of {', '.join(FRAMEWORKS)}, not {framework!r}")
        self.framework = "np" if framework in ("np", "numpy") else "pt"
        self.device = device
        self.path = os.fspath(filename)
        self._f = open(self.path, "rb")  # noqa: SIM115 (closed by close / __exit__)
        try:
            self._reader = ArchiveReader(self._f, self.path)
            if self._reader.kind != "archive" or self._reader.format is None:
                raise StreamError(
                    f"{self.path}: not an lmgc archive of a file (a bare stream holds one "
                    "nameless array: use lmgc_core.decompress)"
                )
            self._decoder = ArchiveDecoder(self._reader, StreamDecoder(jobs=jobs))
        except BaseException:
            self._f.close()
            raise
        self._index: dict[str, int] = {}  # an array's aliases (tied weights) name it too
        self._views: dict[str, Tensor] = {}  # a torch storage's views, by name
        for i, t in enumerate(self._decoder.tensors):
            if not t.bytes_only:
                self._index.update(dict.fromkeys((t.name, *t.aliases), i))
                for view in t.view_tensors():
                    self._index[view.name], self._views[view.name] = i, view

    # -- the safetensors interface ---------------------------------------------------------------

    def keys(self) -> list[str]:
        """Tensor names in the source file's order (byte runs of the source left out)."""
        return list(self._index)

    def metadata(self) -> dict[str, str] | None:
        """The safetensors ``__metadata__`` of the source file (None when it had none)."""
        return self._reader.metadata

    def get_tensor(self, name: str) -> Any:
        """The tensor, decoded now (a torch tensor for ``pt``, a numpy array for ``np``)."""
        arr, tensor = self._decode(name)
        if self.framework == "np":
            return arr
        from lmgc_core.safetensors._torch_convert import to_torch

        try:
            return to_torch(arr, tensor, self.device)
        except ConfigError as exc:
            raise ConfigError(f"{self.path}: tensor {name!r}: {exc}") from None

    def get_slice(self, name: str) -> _Slice:
        """What transformers asks for: the tensor's dtype and shape without decoding it, and
        ``[...]`` of it (the whole tensor is decoded then)."""
        if name not in self._index:
            raise self._missing(name)
        return _Slice(self, name, self._views.get(name) or self._decoder.tensors[self._index[name]])

    def _missing(self, name: str) -> TensorError:
        """A name not held. In a torch file's archive a tensor that views part of its storage,
        or shares it in another way than its other views (tied weights are aliases), is held
        only as that storage (``data/<key>``): say so, or "no tensor named" reads as if the
        checkpoint lacked it."""
        text = f"{self.path}: no tensor named {name!r} in the archive"
        storages = [k for k in self._index if k.startswith("data/")]
        if self._reader.format == "torch" and storages:
            text += (
                f"; tensors of a torch file that view part of a storage, or share one in "
                f"different ways, are held "
                f"as that storage, flat, under data/<key> ({', '.join(storages[:3])}"
                f"{', ...' if len(storages) > 3 else ''}): torch.load gives the views"
            )
        return TensorError(text)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> SafeOpen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- decoding --------------------------------------------------------------------------------

    def _decode(self, name: str) -> tuple[np.ndarray, Tensor]:
        if name not in self._index:
            raise self._missing(name)
        index = self._index[name]
        tensor = self._decoder.tensors[index]
        try:
            buf = self._joined_bytes(index, tensor)
        except LMGCError as exc:
            raise type(exc)(f"tensor {name!r}: {exc}") from None
        values = as_tagged(tensor)
        arr = tagged_values(buf.view(tensor.dtype), values.dtype).reshape(tensor.stored_shape)
        view = self._views.get(name)
        if view is not None and view.view is not None:  # its part of the storage, copied
            return view.view.take(arr), as_tagged(view)
        return (arr.T if tensor.fortran else arr), values

    def _joined_bytes(self, index: int, tensor: Tensor) -> np.ndarray:
        """The tensor's decoded bytes in one buffer, made only once the first member has
        decoded: its header is checked against the manifest first, so a small archive whose
        manifest declares a terabyte tensor is refused by that check, not met with numpy's
        MemoryError (or a terabyte of address space)."""
        buf: np.ndarray | None = None
        pos = 0
        for chunk in self._decoder.chunks(index):
            raw = np.ascontiguousarray(chunk).reshape(-1).view(np.uint8)
            if buf is None:
                try:
                    buf = np.empty(tensor.nbytes, dtype=np.uint8)
                except MemoryError:  # consistent headers may declare terabytes of zeros
                    raise OutOfMemoryError(
                        f"the tensor's {tensor.nbytes} bytes do not fit in this process"
                    ) from None
            buf[pos : pos + raw.size] = raw
            pos += raw.size
        return np.empty(0, dtype=np.uint8) if buf is None else buf


class _Slice:
    """``safetensors``' slice object: ``get_dtype()`` (its tag, ``"BF16"``), ``get_shape()``,
    and indexing. transformers reads the first two of every tensor to lay out a model on the
    meta device; a plain tensor has neither (AttributeError on ``from_pretrained``)."""

    def __init__(self, owner: SafeOpen, name: str, tensor: Tensor) -> None:
        self._owner, self._name, self._tensor = owner, name, tensor

    def get_dtype(self) -> str:
        from lmgc_core.files.safetensors_file import tag_of

        return self._tensor.tag or tag_of(self._tensor.dtype) or str(self._tensor.dtype)

    def get_shape(self) -> list[int]:
        return list(self._tensor.declared_shape or self._tensor.shape)

    def __getitem__(self, index: Any) -> Any:
        return self._owner.get_tensor(self._name)[index]
