"""Write the compatibility fixtures of the current format versions (see docs/compatibility.md).

    python scripts/make_fixtures.py stream     # -> tests/fixtures/stream-v<container.VERSION>/
    python scripts/make_fixtures.py archive    # -> tests/fixtures/archive-v<ARCHIVE_VERSION>/

Fixtures are real streams and archives that ``tests/files/test_fixtures.py`` decodes with today's
code and compares, by SHA-256, with what they must decode to. They are written once per format
version and never edited or regenerated, so this script only ever writes a NEW directory (it
refuses an existing one; ``--out`` names another, e.g. ``archive-v1-stream-v3`` when only the
stream version changed).

Every input is built here, deterministically, from ``tests/data/mlp_grads_8k.npy`` (real
gradients) and integer arithmetic: the same script on the same code writes the same bytes, which
is what the test's re-encoding guard relies on. Run it against an older checkout by putting that
checkout (and its ``plugins/*``) first on ``PYTHONPATH``; the index records which lmgc code
(``lmgc_core.__file__``'s git commit) wrote each file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
GRADS = ROOT / "tests" / "data" / "mlp_grads_8k.npy"
INDEX = "index.json"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def grads(n: int, start: int = 0) -> np.ndarray:
    """``n`` real float32 gradients (a committed file, so the inputs never change)."""
    return np.load(GRADS)[start : start + n].astype(np.float32)


def _bits(values: list[int], dtype: str) -> np.ndarray:
    return np.array(values, dtype=dtype.replace("f", "u")).view(dtype)


# ------------------------------------------------------------------------------- stream inputs


def specials_f32() -> np.ndarray:
    """IEEE specials among real values: NaN payloads (quiet, signalling, negative), -0.0, +-inf,
    subnormals, extremes."""
    special = _bits(
        [
            0x7FC00000,
            0x7FC00001,
            0xFFC12345,
            0x7F800001,
            0x7FBFFFFF,
            0x80000000,
            0x00000000,
            0x7F800000,
            0xFF800000,
            0x00000001,
            0x807FFFFF,
            0x00400000,
            0x7F7FFFFF,
            0xFF7FFFFF,
            0x00800000,
            0x3F800000,
        ],
        "<f4",
    )
    out = grads(64)
    out[::4] = special
    return out


def specials_f64() -> np.ndarray:
    special = _bits(
        [
            0x7FF8000000000000,
            0x7FF8000000000001,
            0xFFF0000000000001,
            0x8000000000000000,
            0x7FF0000000000000,
            0xFFF0000000000000,
            0x0000000000000001,
            0x800FFFFFFFFFFFFF,
        ],
        "<f8",
    )
    out = grads(32).astype(np.float64)
    out[::4] = special
    return out


def bf16() -> np.ndarray:
    import ml_dtypes

    out = grads(512).astype(ml_dtypes.bfloat16)
    out[:4] = _bits([0x7FC1, 0x8000, 0xFF80, 0x0001], "<f2").view(ml_dtypes.bfloat16)
    return out


def grads_and_squares_bf16() -> np.ndarray:
    """Two tensors of different spread in one level-1 block (the squares' exponents spread twice
    as wide), so the encoder splits the block (``splits``)."""
    import ml_dtypes

    g = grads(8192)
    return np.concatenate([g, g * g]).astype(ml_dtypes.bfloat16)


def int32() -> np.ndarray:
    return (grads(512) * np.float32(1e6)).astype(np.int32)


def uint8() -> np.ndarray:
    return (np.arange(512, dtype=np.uint32) * 2654435761 >> 24).astype(np.uint8)


LAYOUT = [[12, 16], [12], [4, 12], [4]]  # a tiny MLP's parameter shapes: 192 + 12 + 48 + 4 = 256


def layout_2d() -> np.ndarray:
    return grads(512).reshape(2, 256)  # two snapshots of the flat parameter vector


def complex64() -> np.ndarray:
    return grads(256).view(np.complex64)


def datetime64() -> np.ndarray:
    base = np.datetime64("2026-12-04T00:00:00", "ns")
    return base + (np.arange(64, dtype=np.int64) ** 3) * np.timedelta64(1_000_003, "ns")


def unicode() -> np.ndarray:
    words = ["", "grad", "Gradient", "\u00e9t\u00e9", "\u6f22\u5b57", "\U0001f600x"]
    return np.array(words * 4, "<U8")


def bytes_s() -> np.ndarray:
    return np.array([b"", b"lmgc", b"\x00\xff\x01", b"abcdef"] * 4, "|S6")


RECORD = np.dtype([("step", "<i4"), ("loss", "<f4"), ("tag", "|S3")])


def record() -> np.ndarray:
    g = grads(32)
    out = np.zeros(32, RECORD)
    out["step"] = np.arange(32) * 7
    out["loss"] = g
    out["tag"] = [b"ab", b"xyz", b"", b"q"] * 8
    return out


def fortran() -> np.ndarray:
    return np.asfortranarray(grads(96).reshape(8, 12))


# ------------------------------------------------------------- inputs coded against a base


def adamw(steps: int, shapes: list[list[int]], lr: float = 1e-4) -> list[dict[str, np.ndarray]]:
    """The state after each of ``steps`` AdamW steps (torch's defaults: betas 0.9/0.999, eps
    1e-8, weight decay 0.01) of a tiny model with parameters of ``shapes``: real gradients
    (``tests/data/mlp_grads_8k.npy``) as each step's gradient, weights started from real values
    too. float32 numpy arithmetic, one operation at a time (no fused multiply-add), so the
    states are the same on every machine. Keys: ``p<i>``, ``p<i>.exp_avg``, ``p<i>.exp_avg_sq``
    and ``step``."""
    f32 = np.float32
    sizes = [int(np.prod(s)) for s in shapes]
    n = sum(sizes)
    flat = grads(n, 8192 - n) * f32(40)  # the weights start from the file's last values
    params = np.split(flat, np.cumsum(sizes)[:-1])
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    beta1, beta2, eps, wd = f32(0.9), f32(0.999), f32(1e-8), f32(0.01)
    out = []
    for t in range(1, steps + 1):
        g_all = np.split(grads(n, (t - 1) * n), np.cumsum(sizes)[:-1])
        bc1 = f32(1) - beta1 ** f32(t)
        bc2 = np.sqrt(f32(1) - beta2 ** f32(t))
        for i, g in enumerate(g_all):
            params[i] = params[i] * (f32(1) - f32(lr) * wd)
            m[i] = m[i] * beta1 + g * (f32(1) - beta1)
            v[i] = v[i] * beta2 + (g * g) * (f32(1) - beta2)
            params[i] = params[i] - (f32(lr) / bc1) * (m[i] / (np.sqrt(v[i]) / bc2 + eps))
        state: dict[str, np.ndarray] = {}
        for i, shape in enumerate(shapes):
            state[f"p{i}"] = params[i].reshape(shape).astype(np.float32)
            state[f"p{i}.exp_avg"] = m[i].reshape(shape).astype(np.float32)
            state[f"p{i}.exp_avg_sq"] = v[i].reshape(shape).astype(np.float32)
        state["step"] = np.array(t, np.float32)
        out.append(state)
    return out


DELTA_MODEL = [[32, 32], [32], [8, 32], [8]]  # 1,320 parameters


def _weights(step: int) -> np.ndarray:
    """The first parameter (32, 32) float32 of :data:`DELTA_MODEL` after AdamW step ``step``."""
    return adamw(step, DELTA_MODEL)[-1]["p0"]


def delta_new_f32() -> np.ndarray:
    """Step 2's weights with IEEE specials in both (NaN payloads, -0.0 vs 0.0, +-inf vs finite,
    subnormals): every bit pattern must survive the ulp distance and the XOR."""
    out = _weights(2).copy()
    flat = out.reshape(-1)
    flat[:8] = _bits(
        [
            0x7FC00001,
            0x80000000,
            0x7F800000,
            0x00000001,
            0xFFC12345,
            0x00000000,
            0x807FFFFF,
            0xFF800000,
        ],
        "<f4",
    )
    return out


def delta_base_f32() -> np.ndarray:
    out = _weights(1).copy()
    out.reshape(-1)[:8] = _bits(
        [
            0x7FC00000,
            0x00000000,
            0x3F800000,
            0x00000002,
            0x7FC12345,
            0x80000000,
            0x007FFFFF,
            0xFF800000,
        ],
        "<f4",
    )
    return out


def _bf16(arr: np.ndarray) -> np.ndarray:
    import ml_dtypes

    return arr.astype(ml_dtypes.bfloat16)


def delta_int32(step: int) -> np.ndarray:
    """Step ``step``'s weights as fixed point (int32, 2^-20 units)."""
    return (_weights(step) * np.float32(1 << 20)).astype(np.int32)


def delta_xor_f32() -> np.ndarray:
    """Step 1's weights with every value's lowest mantissa bit flipped (another rounding): the
    XOR of the bit patterns codes it smallest."""
    return (_weights(1).view(np.uint32) ^ np.uint32(1)).view(np.float32)


def sgd_series(steps: int, n: int, dtype: Any = np.float32) -> np.ndarray:
    """``(steps, n)``: weights after each of ``steps`` plain SGD steps on real gradients (a
    checkpoint per row, as a Zarr array with a time axis holds them)."""
    w = grads(n, 4096) * np.float32(40)
    rows = []
    for t in range(steps):
        w = (w - np.float32(0.01) * grads(n, t * n)).astype(np.float32)
        rows.append(w)
    return np.stack(rows).astype(dtype)


# ----------------------------------------------------------------------------- stream cases


@dataclass(frozen=True)
class StreamCase:
    name: str
    what: str
    build: Callable[[], np.ndarray]
    config: dict[str, Any] = field(default_factory=dict)
    via: str = "api"
    """``api``: ``Pipeline.compress`` / ``lmgc_core.decompress``; ``numcodecs``: the codec (the
    noted views, ``time_axis`` series chunks)."""
    lm: bool = False
    base: Callable[[], np.ndarray] | None = None
    """The array the stream is coded against (``Pipeline.compress(x, base=, base_name=)``);
    committed beside the stream as ``<case>.base.npy``, since decoding needs it."""
    base_name: str | None = None

    @property
    def file(self) -> str:
        return f"{self.name}.lmgc"

    @property
    def base_file(self) -> str:
        return f"{self.name}.base.npy"


HEX = {"name": "hex", "bytes_per_group": 4, "separator": " "}
MIX = {"name": "mix", "experts": [{"name": "float"}, {"name": "adaptive"}]}
STREAM_CASES = [
    StreamCase("float-f32", "float prior (default), 1024 float32 gradients", lambda: grads(1024)),
    StreamCase("float-bf16", "float prior, 512 bfloat16 (NaN, -0.0, -inf, subnormal first)", bf16),
    StreamCase("float-f16", "float prior, 512 float16", lambda: grads(512).astype(np.float16)),
    StreamCase(
        "float-f64", "float prior, 256 float64", lambda: grads(256).astype(np.float64) * 1e-3
    ),
    StreamCase("float-int32", "float prior, 512 int32", int32),
    StreamCase("float-uint8", "float prior, 512 uint8", uint8),
    StreamCase("float-specials-f32", "float prior, IEEE specials in float32", specials_f32),
    StreamCase("float-specials-f64", "float prior, IEEE specials in float64", specials_f64),
    StreamCase(
        "float-layout-2d",
        "float prior with the layout option, a (2, 256) float32 tensor",
        layout_2d,
        {"prior": {"name": "float", "layout": LAYOUT}},
    ),
    StreamCase(
        "float-small-blocks",
        "float prior, block_values 128: several blocks",
        lambda: grads(512).reshape(16, 32),
        {"prior": {"name": "float", "block_values": 128}},
    ),
    StreamCase(
        "adaptive-hex-range",
        "adaptive prior + hex serializer + range coder, window 64, batch 2 (several blocks)",
        lambda: grads(256),
        {
            "serializer": HEX,
            "prior": {"name": "adaptive"},
            "coder": {"name": "range"},
            "window": 64,
            "batch": 2,
        },
    ),
    StreamCase(
        "adaptive-hex-options",
        "adaptive prior, hex with 2-byte groups, little-endian, '0x' prefix, ',' separator",
        lambda: grads(64).astype(np.float16),
        {
            "serializer": {
                "name": "hex",
                "bytes_per_group": 2,
                "separator": ",",
                "prefix": "0x",
                "byte_order": "little",
            },
            "prior": {"name": "adaptive", "initial": 0.5, "limit": 4096},
            "window": 128,
        },
    ),
    StreamCase(
        "uniform-iso",
        "uniform prior + iso serializer (bytes as symbols)",
        lambda: grads(64),
        {"serializer": {"name": "iso"}, "prior": {"name": "uniform"}, "window": 128},
    ),
    StreamCase(
        "quantize",
        "stage quantize bits=8, float prior (decodes to the stage's reconstruction)",
        lambda: grads(512),
        {"stages": [{"name": "quantize", "bits": 8}]},
    ),
    StreamCase(
        "sparsify-topk-bitmask",
        "stage sparsify keep=0.1 topk, bitmask indices, float prior",
        lambda: grads(512),
        {"stages": [{"name": "sparsify", "keep": 0.1}]},
    ),
    StreamCase(
        "sparsify-random-delta-quantize",
        "stages sparsify keep=0.25 random seed=7 delta indices, then quantize bits=6",
        lambda: grads(512),
        {
            "stages": [
                {
                    "name": "sparsify",
                    "keep": 0.25,
                    "method": "random",
                    "seed": 7,
                    "index_format": "delta",
                },
                {"name": "quantize", "bits": 6},
            ]
        },
    ),
    StreamCase(
        "adaptive-stages",
        "adaptive + hex with stages sparsify keep=0.2 (topk, bitmask) then quantize bits=8",
        lambda: grads(256),
        {
            "stages": [{"name": "sparsify", "keep": 0.2}, {"name": "quantize", "bits": 8}],
            "serializer": HEX,
            "prior": {"name": "adaptive"},
            "window": 128,
        },
    ),
    StreamCase(
        "float-level1",
        "float prior level 1 (fast), 1024 float32",
        lambda: grads(1024, 2048).reshape(32, 32),
        {"prior": {"name": "float", "level": 1}},
    ),
    StreamCase(
        "float-level1-bf16",
        "float prior level 1 (fast), 512 bfloat16",
        bf16,
        {"prior": {"name": "float", "level": 1}},
    ),
    StreamCase(
        "mix",
        "mix prior (float + adaptive experts) over hex; float's own array stream "
        "was no larger, so it is kept (the fallback)",
        lambda: grads(96),
        {"prior": MIX, "serializer": HEX, "window": 256},
    ),
    StreamCase(
        "mix-mixture",
        "mix prior, float + adaptive experts mixed digit by digit over hex (fallback off)",
        lambda: grads(64, 96),
        {"prior": {**MIX, "fallback": False}, "serializer": HEX, "window": 256},
    ),
    StreamCase(
        "float-small-parts",
        "float prior level 1, small_parts 'smaller': the 1024 "
        'float32 part was coded at level 2 (part meta "level": 2, per-block checksums)',
        lambda: grads(1024, 1024),
        {"prior": {"name": "float", "level": 1, "small_parts": "smaller"}},
    ),
    StreamCase(
        "float-level1-splits",
        "float prior level 1, two bfloat16 tensors of 8192 values in "
        "one block: real gradients, then their squares; the encoder cut the block between "
        'them (part meta "splits": [1])',
        grads_and_squares_bf16,
        {
            "prior": {
                "name": "float",
                "level": 1,
                "small_parts": "level",
                "layout": [[8192], [8192]],
            }
        },
    ),
    StreamCase(
        "float-level1-states64",
        "float prior level 1, 32768 float32 (four copies of the "
        "gradients scaled by 1, 2, 4, 8): a block of ~80 KB, which interleaves 64 rANS "
        "states (fast_version 6)",
        lambda: np.concatenate([grads(8192) * np.float32(2**k) for k in range(4)]),
        {"prior": {"name": "float", "level": 1}},
    ),
    StreamCase(
        "float-delta-l1-f32",
        "float prior level 1 against a base (coding 'delta', "
        "lmgc_float.delta meta version 2): AdamW weights step 2 vs step 1, (32, 32) "
        "float32, IEEE specials in both",
        delta_new_f32,
        {"prior": {"name": "float", "level": 1}},
        base=delta_base_f32,
        base_name="step-1",
    ),
    StreamCase(
        "float-delta-l2-f32",
        "float prior level 2 against a base: as float-delta-l1-f32",
        delta_new_f32,
        {"prior": {"name": "float", "level": 2}},
        base=delta_base_f32,
        base_name="step-1",
    ),
    StreamCase(
        "float-delta-l1-bf16",
        "float prior level 1 against a base: AdamW weights step 2 "
        "vs step 1 as bfloat16 (unnamed base)",
        lambda: _bf16(_weights(2)),
        {"prior": {"name": "float", "level": 1}},
        base=lambda: _bf16(_weights(1)),
    ),
    StreamCase(
        "float-delta-l2-bf16",
        "float prior level 2 against a base: as float-delta-l1-bf16",
        lambda: _bf16(_weights(2)),
        {"prior": {"name": "float", "level": 2}},
        base=lambda: _bf16(_weights(1)),
        base_name="step-1",
    ),
    StreamCase(
        "float-delta-l1-int32",
        "float prior level 1 against a base: int32 (fixed-point weights, step 2 vs step 1)",
        lambda: delta_int32(2),
        {"prior": {"name": "float", "level": 1}},
        base=lambda: delta_int32(1),
        base_name="step-1",
    ),
    StreamCase(
        "float-delta-l1-xor",
        "float prior level 1 against a base, a block coded as the "
        "XOR of the bit patterns (the lowest mantissa bit flipped everywhere)",
        delta_xor_f32,
        {"prior": {"name": "float", "level": 1}},
        base=lambda: _weights(1),
        base_name="step-1",
    ),
    StreamCase(
        "float-delta-l1-alone",
        "float prior level 1 against a base, the block coded "
        "alone inside the delta part (a gradient against the previous step's: unrelated)",
        lambda: grads(1024, 1024),
        {"prior": {"name": "float", "level": 1}},
        base=lambda: grads(1024),
        base_name="grad-0",
    ),
    StreamCase(
        "float-delta-small-parts",
        "float prior level 1, small_parts 'smaller', against "
        'a base: the delta was coded at level 2 (delta meta "level": 2)',
        delta_new_f32,
        {"prior": {"name": "float", "level": 1, "small_parts": "smaller"}},
        base=delta_base_f32,
        base_name="step-1",
    ),
    StreamCase(
        "series-time-axis-l1",
        "numcodecs codec, time_axis 0, level 1: a (4, 256) float32 "
        "chunk of SGD checkpoints, a series stream (step 0 alone, step t against t - 1)",
        lambda: sgd_series(4, 256),
        {"prior": {"name": "float", "level": 1}, "time_axis": 0},
        via="numcodecs",
    ),
    StreamCase(
        "series-time-axis-l2-bf16",
        "numcodecs codec, time_axis 1, level 2: a (128, 3) bfloat16 chunk (time on the last axis)",
        lambda: _bf16(sgd_series(3, 128).T.copy()),
        {"prior": {"name": "float", "level": 2}, "time_axis": 1},
        via="numcodecs",
    ),
    StreamCase(
        "view-complex64", "noted view: complex64 as float32 parts", complex64, via="numcodecs"
    ),
    StreamCase(
        "view-datetime64", "noted view: datetime64[ns] as int64", datetime64, via="numcodecs"
    ),
    StreamCase("view-unicode", "noted view: <U8 as uint32 code points", unicode, via="numcodecs"),
    StreamCase("view-bytes", "noted view: |S6 as uint8", bytes_s, via="numcodecs"),
    StreamCase("view-record", "noted view: a record dtype as uint8 bytes", record, via="numcodecs"),
    StreamCase(
        "view-fortran",
        "noted view: a Fortran-ordered (8, 12) float32, order F",
        fortran,
        via="numcodecs",
    ),
    # transformers rather than llamacpp: llama-cpp-python 0.3.36 segfaulted in prior.decode on
    # the machine that wrote the first fixtures. The stream binds to the model file, backend
    # versions and CPU capability recorded in its prior fingerprint.
    StreamCase(
        "lm-transformers",
        "transformers prior (bundled SmolLM2-135M GGUF, float32, CPU, threads 1), 16 float32, "
        "window 64",
        lambda: grads(16),
        {"prior": {"name": "transformers", "threads": 1}, "window": 64},
        lm=True,
    ),
]


# ----------------------------------------------------------------------------- archive inputs


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _npz(path: Path, arrays: dict[str, np.ndarray], compression: int) -> None:
    """What ``np.savez`` / ``np.savez_compressed`` write (same members, zip64 local headers),
    with a fixed date instead of the clock's."""
    with zipfile.ZipFile(path, "w", compression=compression, allowZip64=True) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=FIXED_DATE)
            info.compress_type = compression
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)


def _safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]], meta: dict) -> None:
    """A safetensors file as the format defines it (header JSON padded with spaces to 8 bytes)."""
    header: dict[str, Any] = {"__metadata__": meta}
    offset, data = 0, []
    for name, (tag, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {
            "dtype": tag,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        offset += len(raw)
        data.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(data))


def source_npy(d: Path) -> Path:
    (p := d / "grads.npy").write_bytes(_npy_bytes(grads(256).reshape(16, 16)))
    return p


def source_npy_rows(d: Path) -> Path:
    (p := d / "rows.npy").write_bytes(_npy_bytes(grads(768, 1024).reshape(48, 16)))
    return p


def source_npy_fortran(d: Path) -> Path:
    (p := d / "fortran.npy").write_bytes(_npy_bytes(np.asfortranarray(grads(96).reshape(8, 12))))
    return p


def source_npz_stored(d: Path) -> Path:
    arrays = {
        "w": grads(128).reshape(8, 16),
        "b": np.arange(4, dtype=np.int64),
        "h": np.float16([1.5, -0.0, np.inf]),
    }
    _npz(p := d / "model.npz", arrays, zipfile.ZIP_STORED)
    return p


def source_npz_deflated(d: Path) -> Path:
    arrays = {"w": grads(128, 256).reshape(8, 16), "step": np.array(12, np.int32)}
    _npz(p := d / "model_compressed.npz", arrays, zipfile.ZIP_DEFLATED)
    return p


def source_safetensors(d: Path) -> Path:
    import ml_dtypes

    tensors = {
        "layer.weight": ("BF16", grads(128).reshape(8, 16).astype(ml_dtypes.bfloat16)),
        "layer.bias": ("F32", grads(8, 512)),
        "steps": ("I64", np.arange(3, dtype=np.int64)),
    }
    meta = {"format": "pt", "note": "lmgc fixture"}
    _safetensors(p := d / "model.safetensors", tensors, meta)
    return p


def source_raw(d: Path) -> Path:
    (p := d / "grads.bin").write_bytes(grads(200).tobytes())
    return p


def source_torch(d: Path) -> Path:
    """A ``torch.save`` checkpoint (deterministic bytes): float32, bfloat16 and int64 storages,
    a view sharing its base's storage, plain Python values."""
    import torch

    w = torch.from_numpy(grads(128).reshape(8, 16).copy())
    state = {
        "model": {
            "w": w,
            "w_tail": w[4:],
            "b": torch.from_numpy(grads(8, 128).copy()).to(torch.bfloat16),
        },
        "step": torch.tensor([12], dtype=torch.int64),
        "lr": 0.01,
        "name": "fixture",
    }
    torch.save(state, p := d / "ckpt.pt")
    return p


def source_torch_tied(d: Path) -> Path:
    """A ``torch.save`` state dict with tied weights (archive version 4's aliases): an
    embedding and an output layer as two tensors on one storage, as ``state_dict`` gives them,
    and a norm's weight."""
    import torch

    emb = torch.from_numpy(grads(128).reshape(16, 8).copy())
    state = {
        "emb.weight": emb,
        "norm.weight": torch.from_numpy(grads(8, 128).copy()),
        "head.weight": emb.view(16, 8),  # another tensor, the same storage seen the same way
    }
    torch.save(state, p := d / "tied.pt")
    return p


def source_torch_transposed(d: Path) -> Path:
    """A ``torch.save`` of a transposed matrix (its storage in Fortran order, archive version 4
    names and shapes it) beside a plain one."""
    import torch

    w = torch.from_numpy(grads(96).reshape(12, 8).copy())
    torch.save({"w_t": w.t(), "b": torch.from_numpy(grads(8, 96).copy())}, p := d / "wt.pt")
    return p


def source_adamw_safetensors(d: Path, step: int = 2) -> Path:
    """A safetensors checkpoint after AdamW step ``step`` of :data:`DELTA_MODEL`: weights, both
    moments and the step (float32), and the first weight again as BF16."""
    state = adamw(step, DELTA_MODEL)[-1]
    tensors = {k: ("F32", v) for k, v in state.items()}
    tensors["p0.bf16"] = ("BF16", _bf16(state["p0"]))
    _safetensors(p := d / f"step{step}.safetensors", tensors, {"step": str(step)})
    return p


def source_adamw_torch(d: Path, step: int = 2) -> Path:
    """A ``torch.save`` of ``{"model": state_dict, "optimizer": AdamW state_dict}`` after step
    ``step`` of :data:`DELTA_MODEL` (the optimizer's state as torch.optim.AdamW keeps it:
    per parameter index ``step``, ``exp_avg``, ``exp_avg_sq``)."""
    import torch

    state = adamw(step, DELTA_MODEL)[-1]
    n = len(DELTA_MODEL)
    model = {
        f"layers.{i // 2}.{'weight' if i % 2 == 0 else 'bias'}": torch.from_numpy(
            state[f"p{i}"].copy()
        )
        for i in range(n)
    }
    optim_state = {
        i: {
            "step": torch.tensor(float(step)),
            "exp_avg": torch.from_numpy(state[f"p{i}.exp_avg"].copy()),
            "exp_avg_sq": torch.from_numpy(state[f"p{i}.exp_avg_sq"].copy()),
        }
        for i in range(n)
    }
    groups = [
        {
            "lr": 1e-4,
            "betas": (0.9, 0.999),
            "eps": 1e-8,
            "weight_decay": 0.01,
            "amsgrad": False,
            "maximize": False,
            "foreach": None,
            "capturable": False,
            "differentiable": False,
            "fused": None,
            "params": list(range(n)),
        }
    ]
    torch.save(
        {"model": model, "optimizer": {"state": optim_state, "param_groups": groups}},
        p := d / f"ckpt-{step}.pt",
    )
    return p


def source_sgd_npy(d: Path, step: int = 1) -> Path:
    """Checkpoint ``step`` (0 or 1) of two SGD steps on 1024 float32 weights, as a .npy."""
    (p := d / f"step{step}.npy").write_bytes(_npy_bytes(sgd_series(2, 1024)[step]))
    return p


@dataclass(frozen=True)
class ArchiveCase:
    name: str
    what: str
    source: Callable[[Path], Path]
    args: tuple[str, ...] = ()
    base: Callable[[Path], Path] | None = None
    """The file of ``--base`` (committed beside the archive: decoding needs it); with
    ``series``, the first file of ``lmgc compress --series BASE SOURCE``, whose archive is
    committed instead (``<case>.base.lmgc``) and decoded first in the same command."""
    series: bool = False

    @property
    def file(self) -> str:
        return f"{self.name}.lmgc"

    def base_file(self, base_source: Path) -> str:
        """The committed base: the file (``--base``) or its archive (``--series``)."""
        if self.series:
            return f"{self.name}.base.lmgc"
        return f"{self.name}.base{''.join(base_source.suffixes)}"


ARCHIVE_CASES = [
    ArchiveCase("npy", "a .npy (16, 16) float32", source_npy),
    ArchiveCase(
        "npy-chunked",
        "a (48, 16) float32 .npy in 3 chunk members (--chunk-size 1024)",
        source_npy_rows,
        ("--chunk-size", "1024"),
    ),
    ArchiveCase("npy-fortran", "a Fortran-ordered .npy", source_npy_fortran),
    ArchiveCase("npz-stored", "an np.savez .npz (stored): f32, int64, f16", source_npz_stored),
    ArchiveCase(
        "npz-deflated",
        "an np.savez_compressed .npz (deflated), with a 0-d member",
        source_npz_deflated,
    ),
    ArchiveCase(
        "safetensors",
        "a .safetensors with __metadata__, BF16, F32 and I64 tensors",
        source_safetensors,
    ),
    ArchiveCase(
        "raw", "a raw file of 200 float32 (--dtype float32)", source_raw, ("--dtype", "float32")
    ),
    ArchiveCase(
        "torch", "a torch.save .pt: f32, bf16 and int64 storages, a shared view", source_torch
    ),
    ArchiveCase(
        "torch-tied",
        "a torch.save state dict with tied weights: one storage, listed and converted under "
        "both names (archive version 4)",
        source_torch_tied,
    ),
    ArchiveCase(
        "torch-transposed",
        "a torch.save of a transposed matrix: named and shaped, in Fortran order "
        "(archive version 4)",
        source_torch_transposed,
    ),
    ArchiveCase(
        "npy-adaptive",
        "a .npy with --prior adaptive (hex serializer)",
        source_npy,
        ("--prior", "adaptive"),
    ),
    ArchiveCase(
        "safetensors-base",
        "lmgc compress step2.safetensors --base step1.safetensors "
        "(archive/manifest version 3 with base): AdamW weights, moments and step (F32), "
        "a BF16 weight",
        source_adamw_safetensors,
        base=lambda d: source_adamw_safetensors(d, 1),
    ),
    ArchiveCase(
        "torch-base",
        "lmgc compress ckpt-2.pt --base ckpt-1.pt: torch.save of a model "
        "state_dict and its AdamW state_dict (exp_avg, exp_avg_sq, step per parameter)",
        source_adamw_torch,
        base=lambda d: source_adamw_torch(d, 1),
    ),
    ArchiveCase(
        "series-npy",
        "lmgc compress --series step0.npy step1.npy: step1 coded against "
        "step0 (SGD checkpoints, 1024 float32); step0's archive committed as the base",
        source_sgd_npy,
        base=lambda d: source_sgd_npy(d, 0),
        series=True,
    ),
    ArchiveCase(
        "safetensors-base-l1",
        "as safetensors-base at today's default level (-l 1, "
        "small_parts 'smaller': each small tensor's delta or array at the smaller level)",
        source_adamw_safetensors,
        ("-l", "1", "-P", "small_parts=smaller"),
        base=lambda d: source_adamw_safetensors(d, 1),
    ),
    ArchiveCase(
        "series-npy-l1",
        "as series-npy at level 1 (small_parts 'level': every part at level 1)",
        source_sgd_npy,
        ("-l", "1"),
        base=lambda d: source_sgd_npy(d, 0),
        series=True,
    ),
]


# ------------------------------------------------------------------------------------ hashing


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dtype_text(dtype: np.dtype) -> str:
    """A dtype as text: numpy's ``str`` (``<f4``), the ``.npy`` descr of records, or an
    ml_dtypes name (``bfloat16``), which numpy cannot spell."""
    dtype = np.dtype(dtype)
    if dtype.fields is not None:
        return str(np.lib.format.dtype_to_descr(dtype))
    if dtype.kind == "V" or dtype.name.startswith(("bfloat", "float8")):
        return dtype.name
    return dtype.str


def describe(arr: np.ndarray) -> dict[str, Any]:
    """What a decode must give back: the C-order bytes' SHA-256, the dtype, shape and order."""
    return {
        "sha256": sha256(np.ascontiguousarray(arr).tobytes()),
        "dtype": dtype_text(arr.dtype),
        "shape": list(arr.shape),
        "order": "F"
        if arr.ndim > 1 and arr.flags.f_contiguous and not arr.flags.c_contiguous
        else "C",
    }


# ----------------------------------------------------------------------------------- encoding


def as_recorded() -> Any:
    """A case's config and CLI arguments are recorded in its index: an option they leave out
    means what it meant when the fixture was written (no float ``level``: 2), as in a stream
    header (``registry.recorded``), not today's default. Older code has no such context."""
    try:
        from lmgc_core.components.registry import recorded
    except ImportError:
        return contextlib.nullcontext()
    return recorded()


def encode_stream(case: StreamCase, arr: np.ndarray) -> bytes:
    with as_recorded():
        if case.via == "numcodecs":
            from lmgc_core.codecs.numcodecs_codec import LMGC

            return LMGC(**case.config).encode(arr)
        from lmgc_core import Pipeline

        pipeline = Pipeline.from_config(case.config)
        if case.base is None:
            return pipeline.compress(arr)
        return pipeline.compress(arr, base=case.base(), base_name=case.base_name)


def decode_stream(case_via: str, blob: bytes, base: np.ndarray | None = None) -> np.ndarray:
    if case_via == "numcodecs":
        import numcodecs

        return numcodecs.get_codec({"id": "lmgc"}).decode(blob)
    import lmgc_core

    if base is None:  # older lmgc has no base= at all
        return lmgc_core.decompress(blob)
    return lmgc_core.decompress(blob, base=base)


DECODE_CALL = {
    "api": "lmgc_core.decompress(blob)",
    "api-base": "lmgc_core.decompress(blob, base=np.load(BASE_FILE))",
    "numcodecs": "numcodecs.get_codec({'id': 'lmgc'}).decode(blob)",
    "cli": "lmgc decompress FILE  (writes FILE without .lmgc)",
    "cli-base": "lmgc decompress FILE --base BASE_FILE",
    "cli-series": "lmgc decompress BASE_ARCHIVE FILE  (renamed to <source_name>.lmgc each)",
}


def run_cli(*args: str) -> None:
    from click.testing import CliRunner

    from lmgc_core.cli.commands import cli

    result = CliRunner().invoke(cli, list(args))
    if result.exit_code != 0:
        raise RuntimeError(f"lmgc {' '.join(args)} failed: {result.output} {result.exception}")


@dataclass(frozen=True)
class Encoded:
    """What :func:`encode_archive` made: the archive, its source, and for a case with a base the
    base file (``--base``) or the series' first archive (``--series``)."""

    blob: bytes
    source: bytes
    source_name: str
    base: Path | None = None
    base_archive: bytes | None = None


def encode_archive(case: ArchiveCase, workdir: Path) -> Encoded:
    """``case``'s archive, made in ``workdir``."""
    src = case.source(workdir)
    out = workdir / case.file
    base = None if case.base is None else case.base(workdir)
    with as_recorded():
        if case.series:
            assert base is not None
            run_cli("compress", "--series", str(base), str(src), *_quiet("compress"), *case.args)
            src.with_name(src.name + ".lmgc").rename(out)
            first = base.with_name(base.name + ".lmgc")
            return Encoded(out.read_bytes(), src.read_bytes(), src.name, base, first.read_bytes())
        with_base = () if base is None else ("--base", str(base))
        run_cli("compress", str(src), "-o", str(out), *_quiet("compress"), *case.args, *with_base)
    return Encoded(out.read_bytes(), src.read_bytes(), src.name, base)


def _quiet(command: str) -> list[str]:
    """``-q`` where the running lmgc's command has it (early ones printed nothing anyway)."""
    from lmgc_core.cli.commands import cli

    return ["-q"] if any(p.name == "quiet" for p in cli.commands[command].params) else []


def decode_archive(blob: bytes, source_name: str, workdir: Path, base: Path | None = None) -> bytes:
    """What ``lmgc decompress`` of the running code writes for an archive of ``source_name``
    (``--base base`` when given)."""
    packed = workdir / f"{source_name}.lmgc"
    packed.write_bytes(blob)
    with_base = () if base is None else ("--base", str(base))
    run_cli(
        "decompress",
        str(packed),
        "-o",
        str(workdir / source_name),
        *_quiet("decompress"),
        *with_base,
    )
    return (workdir / source_name).read_bytes()


def decode_series(archives: list[tuple[bytes, str]], workdir: Path) -> list[bytes]:
    """``lmgc decompress A.lmgc B.lmgc ...`` of ``(archive, source name)`` pairs, in order: each
    decoded with the file an earlier one wrote back as its base."""
    packed = []
    for blob, name in archives:
        (p := workdir / f"{name}.lmgc").write_bytes(blob)
        packed.append(str(p))
    run_cli("decompress", *packed, *_quiet("decompress"))
    return [(workdir / name).read_bytes() for _, name in archives]


def member_arrays(blob: bytes) -> dict[str, Any]:
    """Tensor name -> :func:`describe` of each stream of a manifest-less archive (a bare stream:
    one nameless tensor), decoded by the running code."""
    import io

    from lmgc_core import decompress

    if blob[:4] != b"PK\x03\x04":
        return {"": describe(decompress(blob))}
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        return {n.removesuffix(".lmgc"): describe(decompress(zf.read(n))) for n in zf.namelist()}


# ------------------------------------------------------------------------------- provenance


def code_commit() -> str:
    """The git commit of the lmgc code that runs (``+dirty`` if its tracked files differ)."""
    import lmgc_core

    root = Path(lmgc_core.__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "lmgc_core",
                "plugins",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def versions() -> dict[str, int]:
    from lmgc_float.fast import FAST_VERSION

    from lmgc_core.files import archive
    from lmgc_core.stream import container

    # 0: the zips written before the manifest (and ARCHIVE_VERSION) existed; the fast level's
    # block version changes the bytes of level-1 streams within one stream version
    return {
        "stream": container.VERSION,
        "archive": getattr(archive, "ARCHIVE_VERSION", 0),
        "fast": FAST_VERSION,
    }


# ------------------------------------------------------------------------------------ writing


def make_streams(out: Path, names: set[str] | None, with_lm: bool) -> dict[str, Any]:
    files: dict[str, Any] = {}
    commit, ver = code_commit(), versions()
    for case in STREAM_CASES:
        if (names and case.name not in names) or (case.lm and not with_lm):
            continue
        arr = case.build()
        blob = encode_stream(case, arr)
        base = None if case.base is None else case.base()
        back = decode_stream(case.via, blob, base)  # what the stream decodes to here, today
        if case.config.get("stages") is None and describe(back) != describe(arr):
            raise RuntimeError(f"{case.name}: lossless stream does not decode to its input")
        (out / case.file).write_bytes(blob)
        extra: dict[str, Any] = {}
        if base is not None:
            extra["base"] = write_base_array(out / case.base_file, base, case.base_name)
        files[case.file] = {
            **extra,
            "case": case.name,
            "what": case.what,
            "commit": commit,
            "stream_version": ver["stream"],
            "config": case.config,
            "input": describe(arr),
            "expected": describe(back),
            "decode": case.via,
            "decode_call": DECODE_CALL["api-base" if base is not None else case.via],
            "lm": case.lm,
            "size": len(blob),
            "file_sha256": sha256(blob),
        }
        print(f"{case.file:40} {len(blob):7} bytes", file=sys.stderr)
    return {
        "kind": "stream",
        "version": ver["stream"],
        "stream_version": ver["stream"],
        "fast_version": ver["fast"],
        "commit": commit,
        "files": files,
    }


def _committed(path: Path, data: bytes) -> dict[str, Any]:
    """Write a base beside its fixture; its index record (file, size, SHA-256)."""
    path.write_bytes(data)
    return {"file": path.name, "size": len(data), "file_sha256": sha256(data)}


def write_base_array(path: Path, base: np.ndarray, name: str | None) -> dict[str, Any]:
    """Commit a stream's base beside it (``.npy``; bfloat16 as its uint16 bits, which ``.npy``
    can spell: ``array`` says the dtype to view them as) and say what it is."""
    stored = base.view(np.uint16) if dtype_text(base.dtype) == "bfloat16" else base
    data = _npy_bytes(np.ascontiguousarray(stored))
    path.write_bytes(data)
    return {
        "file": path.name,
        "name": name,
        "array": describe(base),
        "size": len(data),
        "file_sha256": sha256(data),
    }


def load_base_array(path: Path, entry: dict[str, Any]) -> np.ndarray:
    """The base :func:`write_base_array` committed, in its dtype."""
    arr = np.load(path, allow_pickle=False)
    if entry["array"]["dtype"] == "bfloat16":
        import ml_dtypes

        arr = arr.view(ml_dtypes.bfloat16)
    return arr


def make_archives(out: Path, names: set[str] | None) -> dict[str, Any]:
    files: dict[str, Any] = {}
    commit, ver = code_commit(), versions()
    for case in ARCHIVE_CASES:
        if names and case.name not in names:
            continue
        extra: dict[str, Any] = {}
        with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as back:
            made = encode_archive(case, Path(tmp))
            blob, source, src_name = made.blob, made.source, made.source_name
            if made.base_archive is not None and made.base is not None:  # --series
                first, decoded = decode_series(
                    [(made.base_archive, made.base.name), (blob, src_name)], Path(back)
                )
                if first != made.base.read_bytes():
                    raise RuntimeError(f"{case.name}: the series' first archive is not its file")
                extra["base"] = _committed(out / case.base_file(made.base), made.base_archive)
                extra["base"].update(
                    archive_of=made.base.name, source={"sha256": sha256(first), "size": len(first)}
                )
            else:
                decoded = decode_archive(blob, src_name, Path(back), made.base)
                if made.base is not None:  # --base
                    extra["base"] = _committed(
                        out / case.base_file(made.base), made.base.read_bytes()
                    )
                    extra["base"]["name"] = made.base.name
        if decoded != source and ver["archive"] > 0:
            raise RuntimeError(f"{case.name}: the archive does not give its source back")
        # without a manifest, decompress converts to the output's format (whose writer may
        # change); what it must give back is then each tensor
        expected = {"sha256": sha256(decoded), "size": len(decoded)}
        if ver["archive"] == 0:
            expected = {"tensors": member_arrays(blob)}
        (out / case.file).write_bytes(blob)
        files[case.file] = {
            **extra,
            "case": case.name,
            "what": case.what,
            "commit": commit,
            "archive_version": ver["archive"],
            "stream_version": ver["stream"],
            "args": list(case.args)
            + (
                ["--series", "BASE", "SOURCE"]
                if case.series
                else ["--base", "BASE"]
                if case.base
                else []
            ),
            "source_name": src_name,
            "source": {"sha256": sha256(source), "size": len(source)},
            "expected": expected,
            "decode": "cli",
            "decode_call": DECODE_CALL[
                "cli-series" if case.series else "cli-base" if case.base else "cli"
            ],
            "lm": False,
            "size": len(blob),
            "file_sha256": sha256(blob),
        }
        print(f"{case.file:40} {len(blob):7} bytes", file=sys.stderr)
    return {
        "kind": "archive",
        "version": ver["archive"],
        "stream_version": ver["stream"],
        "fast_version": ver["fast"],
        "commit": commit,
        "files": files,
    }


def write_index(out: Path, index: dict[str, Any]) -> None:
    text = json.dumps(index, indent=1, sort_keys=True, ensure_ascii=True) + "\n"
    (out / INDEX).write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["stream", "archive"])
    parser.add_argument(
        "--out", type=Path, help="a new directory (default: tests/fixtures/<kind>-v<version>)"
    )
    parser.add_argument("--only", nargs="*", help="case names (default: all)")
    parser.add_argument("--no-lm", action="store_true", help="leave out the LM stream")
    args = parser.parse_args(argv)
    ver = versions()[args.kind]
    out = args.out or FIXTURES / f"{args.kind}-v{ver}"
    if out.exists():
        print(
            f"error: {out} exists; fixtures are never regenerated or edited (see "
            "docs/compatibility.md); pass --out for a new directory",
            file=sys.stderr,
        )
        return 2
    out.mkdir(parents=True)
    names = set(args.only) if args.only else None
    if args.kind == "stream":
        index = make_streams(out, names, with_lm=not args.no_lm)
    else:
        index = make_archives(out, names)
    write_index(out, index)
    total = sum(f["size"] for f in index["files"].values())
    print(f"wrote {len(index['files'])} fixtures ({total} bytes) to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
