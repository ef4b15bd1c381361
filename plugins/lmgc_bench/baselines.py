"""Classical lossless codecs the benchmark compares lmgc against, all on exactly the same bytes.

Every codec maps ``bytes -> bytes -> bytes``; whatever a decoder needs beyond the codec's own
stream (a true length after padding, plane lengths) is stored in a small header that is part of
the compressed size. Every measurement decodes what it encoded and compares bit for bit
(:func:`measure`); a codec that does not reproduce its input is flagged, never reported.

* ``gzip``  -- :func:`gzip.compress`, level 9, ``mtime=0``.
* ``lzma``  -- :func:`lzma.compress`, xz container, preset 9 (LZMA2; the dictionary is capped at
  the input size rounded up to a power of two, which changes no size, only the memory).
* ``zstd``  -- ``zstandard``, level 19, no content-size/checksum flags beyond the defaults.
* ``png``   -- the bytes as an 8-bit grayscale image ``width`` bytes wide (default 1024, or the
  input length if shorter), the last row zero-padded; Pillow writes it with ``optimize=True``
  (zlib level 9 and the best PNG filter per row). Header: the pad count as 2 bytes.
* ``flac``  -- the bytes as mono 16-bit little-endian PCM (one sample = two consecutive bytes),
  a zero byte appended when the length is odd; libFLAC via ``soundfile`` at 48 kHz with its
  highest compression level where ``soundfile`` exposes it. Header: 1 byte, the pad flag.
* ``fpzip`` -- ``fpzip.compress(float32 array, precision=0)`` (lossless).
* ``pcodec`` -- ``pcodec.standalone.simple_compress`` with the default ``ChunkConfig``.
* ``blosc2-shuffle`` / ``blosc2-bitshuffle`` -- one Blosc2 chunk, typesize 4, the byte shuffle
  or bit shuffle filter, zstd at clevel 9, 1 thread.
* ``byteplane-zstd`` -- the ZipNN idea: split each float32 into its 4 bytes, making 4 planes
  (byte 0 of every float, then byte 1, ...), each zstd-compressed at level 19. Header: the first
  three compressed plane lengths as uint32 (12 bytes).

Codecs marked ``float32`` only accept buffers of little-endian float32 values; the harness skips
them for other payloads (e.g. the output of a quantize stage).
"""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmgc_core.components.spec import ComponentSpec


class Codec:
    """A lossless bytes codec. Subclasses set ``name`` and implement the two methods."""

    name = ""
    float32_only = False
    requires: tuple[str, ...] = ()

    def __init__(self, **options: Any) -> None:
        self.options = options

    @property
    def label(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.name}({opts})" if opts else self.name

    def compress(self, data: bytes) -> bytes:
        raise NotImplementedError

    def decompress(self, blob: bytes) -> bytes:
        raise NotImplementedError


class Gzip(Codec):
    name = "gzip"

    def compress(self, data: bytes) -> bytes:
        import gzip

        return gzip.compress(data, compresslevel=self.options.get("level", 9), mtime=0)

    def decompress(self, blob: bytes) -> bytes:
        import gzip

        return gzip.decompress(blob)


class Lzma(Codec):
    name = "lzma"

    def compress(self, data: bytes) -> bytes:
        import lzma

        # preset 9, with the dictionary no larger than the input needs: the same compressed
        # size as plain preset 9, without allocating 64 MiB for every 512-byte chunk
        dict_size = min(1 << 26, max(1 << 12, 1 << max(0, len(data) - 1).bit_length()))
        filters = [
            {
                "id": lzma.FILTER_LZMA2,
                "preset": self.options.get("preset", 9),
                "dict_size": dict_size,
            }
        ]
        return lzma.compress(data, format=lzma.FORMAT_XZ, filters=filters)

    def decompress(self, blob: bytes) -> bytes:
        import lzma

        return lzma.decompress(blob)


class Zstd(Codec):
    name = "zstd"
    requires = ("zstandard",)

    def compress(self, data: bytes) -> bytes:
        import zstandard

        return zstandard.ZstdCompressor(level=self.options.get("level", 19)).compress(data)

    def decompress(self, blob: bytes) -> bytes:
        import zstandard

        return zstandard.ZstdDecompressor().decompress(blob)


class Png(Codec):
    name = "png"
    requires = ("PIL",)

    def compress(self, data: bytes) -> bytes:
        from PIL import Image

        n = len(data)
        width = max(1, min(self.options.get("width", 1024), n))
        height = max(1, -(-n // width))
        pad = width * height - n
        img = Image.frombytes("L", (width, height), data + bytes(pad))
        out = io.BytesIO()
        img.save(out, format="PNG", optimize=True)
        return struct.pack("<H", pad) + out.getvalue()

    def decompress(self, blob: bytes) -> bytes:
        from PIL import Image

        (pad,) = struct.unpack("<H", blob[:2])
        with Image.open(io.BytesIO(blob[2:])) as img:
            if img.mode != "L":
                raise ValueError(f"PNG decoded as mode {img.mode}")
            raw = img.tobytes()
        return raw[: len(raw) - pad]


class Flac(Codec):
    name = "flac"
    requires = ("soundfile",)

    def compress(self, data: bytes) -> bytes:
        import soundfile as sf

        pad = len(data) % 2
        pcm = np.frombuffer(data + bytes(pad), dtype="<i2")
        out = io.BytesIO()
        level = self.options.get("compression_level", 1.0)
        try:
            sf.write(out, pcm, 48000, format="FLAC", subtype="PCM_16", compression_level=level)
        except TypeError:  # soundfile < 0.13 has no compression_level
            out = io.BytesIO()
            sf.write(out, pcm, 48000, format="FLAC", subtype="PCM_16")
        return bytes([pad]) + out.getvalue()

    def decompress(self, blob: bytes) -> bytes:
        import soundfile as sf

        pad = blob[0]
        pcm, _ = sf.read(io.BytesIO(blob[1:]), dtype="int16", always_2d=False)
        raw = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
        return raw[: len(raw) - pad]


class Fpzip(Codec):
    name = "fpzip"
    float32_only = True
    requires = ("fpzip",)

    def compress(self, data: bytes) -> bytes:
        import fpzip

        return fpzip.compress(np.frombuffer(data, dtype="<f4").copy(), precision=0, order="C")

    def decompress(self, blob: bytes) -> bytes:
        import fpzip

        return np.ascontiguousarray(fpzip.decompress(blob, order="C"), dtype="<f4").tobytes()


class Pcodec(Codec):
    name = "pcodec"
    float32_only = True
    requires = ("pcodec",)

    def compress(self, data: bytes) -> bytes:
        from pcodec import ChunkConfig, standalone

        arr = np.frombuffer(data, dtype="<f4").copy()
        return bytes(standalone.simple_compress(arr, ChunkConfig()))

    def decompress(self, blob: bytes) -> bytes:
        from pcodec import standalone

        return np.ascontiguousarray(standalone.simple_decompress(blob), dtype="<f4").tobytes()


class Blosc2(Codec):
    name = "blosc2"
    float32_only = True
    requires = ("blosc2",)

    def __init__(self, filter: str = "shuffle", **options: Any) -> None:
        super().__init__(filter=filter, **options)

    @property
    def label(self) -> str:
        return f"blosc2-{self.options['filter']}"

    def compress(self, data: bytes) -> bytes:
        import blosc2

        filt = {"shuffle": blosc2.Filter.SHUFFLE, "bitshuffle": blosc2.Filter.BITSHUFFLE}[
            self.options["filter"]
        ]
        cparams = {
            "codec": blosc2.Codec.ZSTD, "clevel": self.options.get("clevel", 9),
            "filters": [filt], "typesize": 4, "nthreads": 1,
        }  # fmt: skip
        return bytes(blosc2.compress2(data, **cparams))

    def decompress(self, blob: bytes) -> bytes:
        import blosc2

        return bytes(blosc2.decompress2(blob, nthreads=1))


class BytePlaneZstd(Codec):
    name = "byteplane-zstd"
    float32_only = True
    requires = ("zstandard",)

    def compress(self, data: bytes) -> bytes:
        import zstandard

        cctx = zstandard.ZstdCompressor(level=self.options.get("level", 19))
        planes = np.frombuffer(data, dtype=np.uint8).reshape(-1, 4).T
        blobs = [cctx.compress(np.ascontiguousarray(p).tobytes()) for p in planes]
        return struct.pack("<3I", *(len(b) for b in blobs[:3])) + b"".join(blobs)

    def decompress(self, blob: bytes) -> bytes:
        import zstandard

        dctx = zstandard.ZstdDecompressor()
        lens = struct.unpack("<3I", blob[:12])
        pos = 12
        planes = []
        for n in (*lens, len(blob) - 12 - sum(lens)):
            planes.append(np.frombuffer(dctx.decompress(blob[pos : pos + n]), dtype=np.uint8))
            pos += n
        return np.stack(planes, axis=1).tobytes()


BASELINES: dict[str, Callable[..., Codec]] = {
    "gzip": Gzip,
    "lzma": Lzma,
    "zstd": Zstd,
    "png": Png,
    "flac": Flac,
    "fpzip": Fpzip,
    "pcodec": Pcodec,
    "blosc2-shuffle": lambda **o: Blosc2(filter="shuffle", **o),
    "blosc2-bitshuffle": lambda **o: Blosc2(filter="bitshuffle", **o),
    "byteplane-zstd": BytePlaneZstd,
}
"""Codec name -> factory(**options). Extend it to benchmark another codec (tests add a broken
one to check that the harness flags it)."""

DEFAULT_BASELINES = tuple(BASELINES)


def make_codec(spec: str | dict[str, Any]) -> Codec:
    """``"zstd"`` or ``{"name": "zstd", "level": 3}`` -> a codec instance."""
    parsed = ComponentSpec.parse(spec, "a baseline codec")
    if parsed.name not in BASELINES:
        raise ValueError(f"unknown baseline codec {parsed.name!r}; known: {', '.join(BASELINES)}")
    return BASELINES[parsed.name](**parsed.options)


def missing_modules(codec: Codec) -> list[str]:
    import importlib.util

    return [m for m in getattr(codec, "requires", ()) if importlib.util.find_spec(m) is None]


@dataclass
class Measurement:
    """One codec on one buffer: sizes, timings, and whether decoding reproduced the input."""

    codec: str
    original_bytes: int
    compressed_bytes: int = 0
    n_chunks: int = 0
    compress_s: float = 0.0
    decompress_s: float = 0.0
    ok: bool = False
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Compressed size as a percentage of the original size (lower is better)."""
        return 100.0 * self.compressed_bytes / self.original_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "original_bytes": self.original_bytes,
            "compressed_bytes": self.compressed_bytes,
            "n_chunks": self.n_chunks,
            "rate": self.rate if self.ok else None,
            "compress_s": self.compress_s,
            "decompress_s": self.decompress_s,
            "ok": self.ok,
            "error": self.error,
            **self.extra,
        }


def measure(codec: Codec, data: bytes, chunk: int | None = None) -> Measurement:
    """Compress ``data`` whole (``chunk=None``) or as independent ``chunk``-byte pieces (sizes
    summed), decode every piece and check it bit for bit. Exceptions and mismatches are recorded
    in ``error`` with ``ok=False``; the compressed size is then not to be reported."""
    m = Measurement(codec.label, len(data))
    if not data:
        m.error = "empty input"
        return m
    step = chunk or len(data)
    try:
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            t0 = time.perf_counter()
            blob = codec.compress(piece)
            t1 = time.perf_counter()
            back = codec.decompress(blob)
            t2 = time.perf_counter()
            m.compress_s += t1 - t0
            m.decompress_s += t2 - t1
            m.compressed_bytes += len(blob)
            m.n_chunks += 1
            if bytes(back) != piece:
                m.error = (
                    f"round trip mismatch in chunk {m.n_chunks - 1} "
                    f"({len(back)} bytes decoded, {len(piece)} expected)"
                )
                return m
    except Exception as exc:  # a broken codec is reported, not fatal
        m.error = f"{type(exc).__name__}: {exc}"
        return m
    m.ok = True
    return m
