"""Several named streams in one file (for .npz / .safetensors inputs): an uncompressed zip whose
members are ordinary lmgc streams named ``<array name>.lmgc``. Each member stays independently
decodable and inspectable."""

from __future__ import annotations

import io
import zipfile

from .errors import StreamError

ZIP_MAGIC = b"PK\x03\x04"
SUFFIX = ".lmgc"


def is_archive(blob: bytes) -> bool:
    return blob[:4] == ZIP_MAGIC


def pack(streams: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, blob in streams.items():
            z.writestr(name + SUFFIX, blob)
    return buf.getvalue()


def unpack(blob: bytes) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            return {
                info.filename[: -len(SUFFIX)]: z.read(info)
                for info in z.infolist()
                if info.filename.endswith(SUFFIX)
            }
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise StreamError(f"corrupted lmgc archive: {exc}") from None
