"""The llama.cpp prior, on llama-cpp-python's low-level C API. Imported only when it is built.

One llama.cpp context serves a batch of ``B`` windows: ``n_seq_max = B``, each window its own
sequence id, a KV cache of ``window`` cells per sequence. A step is one ``llama_decode`` over the
``B x k`` new tokens, laid out position-major (so the ``B`` tokens whose logits are wanted come
last), with logits requested for those only. Contexts are pooled per (B, window) and cleared
between batches, so each batch starts from the same state on the encoder and the decoder.

The ``llama_batch`` handed to ``llama_decode`` points into numpy arrays this module owns (no
``llama_batch_init``/``llama_batch_free``, no per-token Python loop).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import llama_cpp
import numpy as np

from lmgc_core.components.interfaces import JSON, PriorSession
from lmgc_core.lm import models
from lmgc_core.lm.prior_base import (
    MAX_THREADS,
    LMPrior,
    LMSession,
    LoadedModel,
    ModelCache,
    check_positive,
)
from lmgc_core.util.errors import ConfigError, MismatchError, OutOfMemoryError, PluginError
from lmgc_core.util.memory import available_bytes, gib
from lmgc_core.util.parallel import default_jobs

IMPL_VERSION = 1
"""Bump when the plugin computes scores differently (context settings, batch layout...)."""
KV_CELL_PAD = 256
MAX_IDLE_CONTEXTS = 2
TF_CHUNK = 256
"""Tokens per ``llama_decode`` call in the teacher-forced estimate (all logits wanted)."""

MODELS: ModelCache[_Model] = ModelCache()
_BACKEND_READY = False

_quiet = logging.getLogger("llama-cpp-python")
if _quiet.level == logging.NOTSET:  # llama.cpp logs every load to stderr otherwise
    _quiet.setLevel(logging.ERROR)


def run_threads(threads: int | None) -> int:
    """The threads a session runs with: ``threads`` (a stream's recorded count, or the
    option), at most this machine's usable cores (results do not depend on the count: 32
    recorded on a big machine ran a 2-core one 4.6x slower), else :func:`auto_threads`."""
    if threads is None:
        return auto_threads()
    return max(1, min(threads, default_jobs()))


def auto_threads() -> int:
    """Threads when none are configured: half the cores, 1 to 4. llama.cpp's results do not
    depend on the count (tested), its speed does, badly: OpenMP workers spin at every barrier,
    so a pool that meets other busy processes collapses (2 threads on this 2-core VM once another
    job started: 22 tokens/s against 141 with 1). Half leaves room for the coder and others."""
    return max(1, min(4, default_jobs() // 2))


def _set(params: Any, name: str, value: Any) -> bool:
    """Set a ctypes struct field if this llama-cpp-python version has it."""
    if any(f == name for f, *_ in params._fields_):
        setattr(params, name, value)
        return True
    return False


# ------------------------------------------------------------------------------ model + contexts


class _Context:
    """A llama.cpp context (KV cache for ``n_seq`` sequences of ``n_cells`` cells each)."""

    def __init__(
        self, model: _Model, n_seq: int, n_cells: int, n_batch: int, n_outputs: int
    ) -> None:
        self.model = model  # keeps the model alive while the context exists
        _check_room(model, n_seq, n_cells)
        p = llama_cpp.llama_context_default_params()
        p.n_ctx = n_seq * n_cells
        p.n_batch = n_batch
        p.n_ubatch = n_batch
        p.n_seq_max = n_seq
        p.n_threads = 1  # set per session (set_threads): results do not depend on it
        p.n_threads_batch = 1
        _set(p, "n_outputs_max", n_outputs)
        _set(p, "n_outputs_max_per_seq", 0)
        _set(p, "kv_unified", False)
        _set(p, "no_perf", True)
        _set(p, "embeddings", False)
        if not _set(p, "flash_attn_type", getattr(llama_cpp, "LLAMA_FLASH_ATTN_TYPE_DISABLED", 0)):
            _set(p, "flash_attn", False)
        if model.n_gpu_layers == 0:  # CPU only: no op or KV offload in GPU builds either
            _set(p, "offload_kqv", False)
            _set(p, "op_offload", False)
        self.ptr = llama_cpp.llama_init_from_model(model.ptr, p)
        if not self.ptr:
            raise PluginError(
                f"llama.cpp could not create a context for {n_seq} windows of {n_cells} tokens "
                "(out of memory?)"
            )
        self.mem = llama_cpp.llama_get_memory(self.ptr)
        self.n_seq = n_seq
        self.n_batch = n_batch

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.mem, True)

    def set_threads(self, threads: int) -> None:
        llama_cpp.llama_set_n_threads(self.ptr, threads, threads)

    def decode(self, tokens: np.ndarray, pos: np.ndarray, seq: np.ndarray, out: np.ndarray) -> None:
        """One ``llama_decode`` over int32 ``tokens``/``pos``/``seq`` and int8 ``out`` flags."""
        n = int(tokens.shape[0])
        seq_ids = np.arange(self.n_seq, dtype=np.int32)
        ptrs = (seq_ids.ctypes.data + 4 * seq.astype(np.uintp)).astype(np.uintp)
        n_seq_id = np.ones(n, dtype=np.int32)
        batch = llama_cpp.llama_batch(
            n_tokens=n,
            token=tokens.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token)),
            embd=None,
            pos=pos.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_pos)),
            n_seq_id=n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            seq_id=ctypes.cast(
                ptrs.ctypes.data, ctypes.POINTER(ctypes.POINTER(llama_cpp.llama_seq_id))
            ),
            logits=out.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )
        rc = llama_cpp.llama_decode(self.ptr, batch)
        if rc != 0:
            raise PluginError(f"llama_decode failed with code {rc} ({n} tokens)")

    def logits(self, rows: int) -> np.ndarray:
        """The last decode's ``rows`` output rows, ``(rows, n_vocab)`` (a view: copy it)."""
        ptr = llama_cpp.llama_get_logits(self.ptr)
        if not ptr:
            raise PluginError("llama.cpp returned no logits")
        return np.ctypeslib.as_array(ptr, shape=(rows, self.model.n_vocab))

    def __del__(self) -> None:
        ptr, self.ptr = getattr(self, "ptr", None), None
        if ptr:
            try:  # noqa: SIM105 - at shutdown contextlib and the library may be gone (None)
                llama_cpp.llama_free(ptr)
            except Exception:
                pass


def kv_bytes(model: _Model, n_seq: int, n_cells: int) -> int:
    """The KV cache a context of ``n_seq x n_cells`` cells takes: per cell and layer, a key and
    a value per KV head in f16 (llama.cpp's default cache type), of the head sizes the GGUF
    records (``<arch>.attention.key_length`` / ``value_length``), else ``n_embd / n_head``."""
    ptr = model.ptr
    meta = models.read_gguf_metadata(model.path)
    arch = meta.get("general.architecture")
    head = int(llama_cpp.llama_model_n_embd(ptr)) // max(1, int(llama_cpp.llama_model_n_head(ptr)))
    key = meta.get(f"{arch}.attention.key_length", head)
    value = meta.get(f"{arch}.attention.value_length", key)
    width = (int(key) + int(value)) * int(llama_cpp.llama_model_n_head_kv(ptr))
    return n_seq * n_cells * int(llama_cpp.llama_model_n_layer(ptr)) * width * 2


def _check_room(model: _Model, n_seq: int, n_cells: int) -> None:
    """Refuse a KV cache larger than the memory left. llama.cpp allocates it whole when the
    context is made, sized by the batch and window a stream declares (not by its length), and
    clears it: a damaged header declaring 512 windows of 8,192 tokens asked for ~100 GB."""
    need, room = kv_bytes(model, n_seq, n_cells), available_bytes()
    if room is not None and need > room:
        raise OutOfMemoryError(
            f"llama.cpp needs a KV cache of {gib(need)} for {n_seq} windows ({n_cells} cells "
            "each, the window rounded up), "
            f"more than the {gib(room)} of memory available (use a smaller batch or window; "
            "a damaged header can declare more than its stream was)"
        )


@dataclass(eq=False, kw_only=True)
class _Model(LoadedModel):
    ptr: Any
    path: Path
    n_gpu_layers: int
    n_vocab: int
    idle: list[tuple[tuple[int, ...], _Context]] = field(default_factory=list)
    """Contexts kept for reuse, oldest first, at most ``MAX_IDLE_CONTEXTS`` (each holds a KV
    cache of ``batch x window`` cells: ~380 MB for SmolLM2 at 8 x 2048)."""

    def take(self, *key: int) -> _Context:
        """A cleared context for ``key = (n_seq, n_cells, n_batch, n_outputs)``: an idle
        one with exactly that key (never a bigger one: the encoder and the decoder must compute
        with identical contexts whatever their caches hold), or a new one."""
        ctx = None
        with self.lock:
            for i in range(len(self.idle) - 1, -1, -1):
                if self.idle[i][0] == key:
                    ctx = self.idle.pop(i)[1]
                    break
        if ctx is None:
            ctx = _Context(self, *key)
        ctx.clear()
        return ctx

    def give(self, ctx: _Context, *key: int) -> None:
        with self.lock:
            self.idle.append((key, ctx))
            del self.idle[:-MAX_IDLE_CONTEXTS]

    def __del__(self) -> None:
        self.idle = []
        ptr, self.ptr = getattr(self, "ptr", None), None
        if ptr:
            try:  # noqa: SIM105 - at shutdown contextlib and the library may be gone (None)
                llama_cpp.llama_model_free(ptr)
            except Exception:
                pass


def _load(path: Path, n_gpu_layers: int) -> _Model:
    global _BACKEND_READY
    if not _BACKEND_READY:
        llama_cpp.llama_backend_init()
        _BACKEND_READY = True
    if n_gpu_layers != 0 and not llama_cpp.llama_supports_gpu_offload():
        raise PluginError(
            f"n_gpu_layers={n_gpu_layers} needs a GPU build of llama-cpp-python (this one "
            "is CPU only: it would silently run on the CPU); use n_gpu_layers=0"
        )
    meta = models.read_gguf_metadata(path)
    tokens, kind, types, bos = models.gguf_vocab(meta)
    if bos is None:
        raise PluginError(f"{path} has neither a BOS nor an EOS token id")
    mp = llama_cpp.llama_model_default_params()
    mp.n_gpu_layers = n_gpu_layers
    # read into memory, not mapped: a file written to while mapped changed the weights under
    # a running model (the stream recorded the old file's hash), and one truncated killed the
    # process (SIGBUS)
    if hasattr(mp, "load_mode"):  # llama.cpp since 2026: a mode; before, a use_mmap flag
        mp.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE
    else:
        mp.use_mmap = False
    ptr = llama_cpp.llama_model_load_from_file(str(path).encode(), mp)
    if not ptr:
        raise PluginError(f"llama.cpp {llama_cpp.__version__} could not load {path}")
    vocab = llama_cpp.llama_model_get_vocab(ptr)
    n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
    if n_vocab != len(tokens):
        llama_cpp.llama_model_free(ptr)
        raise PluginError(f"{path}: llama.cpp sees {n_vocab} tokens, the header {len(tokens)}")
    return _Model(
        ptr=ptr,
        path=path,
        n_gpu_layers=n_gpu_layers,
        n_vocab=n_vocab,
        context=int(llama_cpp.llama_model_n_ctx_train(ptr)),
        tokens=tokens,
        kind=kind,
        token_types=types,
        bos=int(bos),
    )


def token_piece(model: _Model, token: int) -> bytes:
    """llama.cpp's own raw bytes for a token (used by tests to cross-check the map)."""
    vocab = llama_cpp.llama_model_get_vocab(model.ptr)
    buf = ctypes.create_string_buffer(64)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
    return buf.raw[: max(n, 0)]


MAX_N_BATCH = 1 << 20
"""The largest ``n_batch`` (llama.cpp keeps it in 32 bits: 2**32 + 8 became 8, and an assert
aborted the process)."""
_SYSTEM_INFO: list[str] = []
_SYSTEM_INFO_LOCK = threading.Lock()


def system_info() -> str:
    """llama.cpp's build and CPU features, compact (``CPU: SSE3 AVX AVX2 ...``): its kernels.
    Asked once per process, under a lock: ``llama_print_system_info`` writes a static buffer,
    and threads calling it at once recorded empty or tripled texts."""
    with _SYSTEM_INFO_LOCK:
        if not _SYSTEM_INFO:
            _SYSTEM_INFO.append(_system_info())
        return _SYSTEM_INFO[0]


def _system_info() -> str:
    raw = llama_cpp.llama_print_system_info()
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    out = []
    for item in text.split("|"):
        head, colon, rest = item.partition(":")
        if colon and "=" not in head:  # "CPU : SSE3 = 1" starts a backend's section
            out.append(head.strip() + ":")
            item = rest
        key, eq, value = (x.strip() for x in item.partition("="))
        if key and (not eq or value == "1"):
            out.append(key)
        elif key and value != "0":
            out.append(f"{key}={value}")
    return " ".join(out)


def _cells(window: int) -> int:
    return -(-window // KV_CELL_PAD) * KV_CELL_PAD


# ------------------------------------------------------------------------------ the prior


class LlamaCppPrior(LMPrior):
    """A GGUF model run by llama.cpp; ``model=None`` is the bundled SmolLM2-135M GGUF."""

    name = "llamacpp"
    impl_version: ClassVar[int] = IMPL_VERSION

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        n_gpu_layers: int = 0,
        n_batch: int = 512,
        unmapped: str = "error",
    ) -> None:
        if threads is not None:
            check_positive("threads", threads, MAX_THREADS)
        check_positive("n_batch", n_batch, MAX_N_BATCH)
        if not isinstance(n_gpu_layers, int) or isinstance(n_gpu_layers, bool) or n_gpu_layers < -1:
            raise ConfigError(f"n_gpu_layers must be an integer >= -1 (all), not {n_gpu_layers!r}")
        self._model_options(model, unmapped)
        if not models.is_gguf(self.path):
            raise ConfigError(
                f"the llamacpp prior needs a .gguf file, not {str(self.path)!r} (use the "
                "transformers prior for Hugging Face folders)"
            )
        self.threads = threads
        self.n_gpu_layers = n_gpu_layers
        self.n_batch = n_batch

    def get_config(self) -> JSON:
        return {
            "model": self.model,
            "threads": self.threads,
            "n_gpu_layers": self.n_gpu_layers,
            "n_batch": self.n_batch,
            "unmapped": self.unmapped,
        }

    def fingerprint(self) -> JSON:
        return {
            **self.model_fingerprint(),
            "llama_cpp_python": llama_cpp.__version__,
            "device": "cpu" if self.n_gpu_layers == 0 else "gpu",
            "n_gpu_layers": self.n_gpu_layers,
            "threads": self.threads,  # informational: not compared (see check_fingerprint)
            "n_batch": self.n_batch,
            "n_ubatch": self.n_batch,
            "flash_attn": False,
            "token_map": self.token_map,
            "system_info": system_info(),
        }

    def check_fingerprint(self, recorded: Mapping[str, Any]) -> None:
        """As the base check, and a llama.cpp built for other CPU features (other ggml kernels)
        is refused with the features that differ. ``threads`` is not compared: llama.cpp gives
        the same numbers with any thread count (tested), so a decoder may use its own. Streams
        from before the features were recorded have no ``system_info``: they are let through
        (the SHA-256 still guards)."""
        theirs = recorded.get("system_info")
        mine = system_info()
        super().check_fingerprint({**recorded, "system_info": mine, "threads": self.threads})
        if theirs is not None and theirs != mine:
            a, b = set(str(theirs).split()), set(mine.split())
            diff = "; ".join(
                part
                for part in (
                    f"only the stream's build has {' '.join(sorted(a - b))}" if a - b else "",
                    f"only this build has {' '.join(sorted(b - a))}" if b - a else "",
                )
                if part
            )
            raise MismatchError(
                f"prior {self.name!r}: system_info: the stream was made by a llama.cpp build "
                f"with other CPU kernels ({diff}); ggml's kernels are chosen when "
                "llama-cpp-python is built: decode with a build for the same CPU features "
                f"(stream: {theirs!r})"
            )

    # -- model -------------------------------------------------------------------------------------
    def loaded(self) -> _Model:
        settings = (self.n_gpu_layers,)
        return MODELS.get(self.path, settings, partial(_load, self.path, *settings))

    def token_ids(self, alphabet: Sequence[bytes]) -> np.ndarray:
        return self.alphabet_map(alphabet)

    def open(
        self,
        alphabet: Sequence[bytes],
        batch_size: int,
        window: int,
        pattern: Sequence[int] = (-1,),
    ) -> PriorSession:
        lm = self.loaded()
        self.check_window(lm, window)
        if batch_size > self.n_batch:
            raise ConfigError(f"batch {batch_size} exceeds the prior's n_batch {self.n_batch}")
        ids = self.token_ids(alphabet).astype(np.int32)
        return LlamaSession(self, lm, ids, batch_size, window)

    def teacher_forced_scores(self, alphabet: Sequence[bytes], windows: np.ndarray) -> np.ndarray:
        """One full pass per window (BOS prepended, all logits kept): ``(n, L, A)`` float32.
        The numbers differ from the step-wise ones in the last bits: an estimate only."""
        lm = self.loaded()
        ids = self.token_ids(alphabet).astype(np.int32)
        windows, out = self.teacher_forced_windows(lm, windows, len(ids))
        if out.size == 0:
            return out
        n, length = windows.shape
        chunk = min(TF_CHUNK, self.n_batch)
        key = (1, _cells(length), chunk, chunk)
        ctx = lm.take(*key)
        ctx.set_threads(run_threads(self.threads))
        try:
            for row in range(n):
                ctx.clear()
                toks = np.concatenate([[lm.bos], ids[windows[row, :-1]]]).astype(np.int32)
                for s in range(0, length, chunk):
                    part = toks[s : s + chunk]
                    m = part.shape[0]
                    ctx.decode(
                        np.ascontiguousarray(part),
                        np.arange(s, s + m, dtype=np.int32),
                        np.zeros(m, dtype=np.int32),
                        np.ones(m, dtype=np.int8),
                    )
                    out[row, s : s + m] = ctx.logits(m)[:, ids]
        finally:
            lm.give(ctx, *key)
        return out


class LlamaSession(LMSession):
    """``B`` windows in lock-step, one llama.cpp sequence each; every call is one decode (split
    into whole-row-block chunks of at most ``n_batch`` tokens when a call feeds more)."""

    def __init__(
        self, prior: LlamaCppPrior, lm: _Model, ids: np.ndarray, batch_size: int, window: int
    ) -> None:
        super().__init__(prior.name, batch_size, window)
        self.lm = lm
        self.ids = ids
        self.key = (batch_size, _cells(window), prior.n_batch, batch_size)
        self.ctx: _Context | None = lm.take(*self.key)
        self.ctx.set_threads(run_threads(prior.threads))
        self.rows = np.arange(batch_size, dtype=np.int32)

    def _feed(self, tokens: np.ndarray) -> np.ndarray:
        """Append ``tokens`` (``(B, k)`` vocabulary ids) to every row; scores after the last."""
        if self.ctx is None:
            raise RuntimeError("session is closed")
        b, k = tokens.shape
        self._room(k)
        flat = np.ascontiguousarray(tokens.T, dtype=np.int32).reshape(-1)  # position-major
        pos = np.repeat(np.arange(self.length, self.length + k, dtype=np.int32), b)
        seq = np.tile(self.rows, k)
        want = np.zeros(b * k, dtype=np.int8)
        want[-b:] = 1
        step = max(1, self.ctx.n_batch // b) * b
        for s in range(0, b * k, step):
            e = s + step
            self.ctx.decode(flat[s:e], pos[s:e], seq[s:e], want[s:e])
        self._fed(k)
        return self.ctx.logits(b)[:, self.ids].astype(np.float32)

    def start(self, prefix: np.ndarray) -> np.ndarray:
        prefix = np.asarray(prefix, dtype=np.int64).reshape(self.batch, -1)
        if self.ctx is None:
            raise RuntimeError("session is closed")
        self.ctx.clear()
        self.length = 0
        first = np.full((self.batch, 1), self.lm.bos, dtype=np.int32)
        return self._feed(np.concatenate([first, self.ids[prefix]], axis=1))

    def advance(self, symbols: np.ndarray) -> np.ndarray:
        symbols = np.asarray(symbols, dtype=np.int64).reshape(self.batch, -1)
        if self.length == 0:
            raise RuntimeError("advance() before start()")
        return self._feed(self.ids[symbols])

    def close(self) -> None:
        super().close()
        ctx, self.ctx = self.ctx, None
        if ctx is not None:
            ctx.clear()
            self.lm.give(ctx, *self.key)
