"""The PyTorch / transformers prior. Imported only when the prior is built (needs torch).

Exactness rests on the encoder and the decoder calling the session identically (same batch
layout, same token chunks), and on each call computing the same numbers: float32 on CPU by
default, a recorded and reapplied thread count, eager attention, deterministic algorithms, TF32
off on CUDA. Full-sequence and step-wise logits differ in the last bits (~1e-4), so the
teacher-forced pass is only used for ``estimate``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

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
from lmgc_core.util.errors import ConfigError, MismatchError, PluginError

from . import cpu

_UNRECORDED = object()
IMPL_VERSION = 1
"""Bump when the plugin computes scores differently (fed tokens, head, attention...)."""
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Architectures whose logits are exactly ``lm_head(last_hidden_state)`` (no softcapping or logit
# scaling), so the head can be restricted to the alphabet's rows: 49k -> 17 output rows per step.
ALPHABET_HEAD_TYPES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "gpt2", "phi3", "olmo", "olmo2", "stablelm", "smollm3"}
)

MODELS: ModelCache[_Loaded] = ModelCache()
_COMPUTE_LOCK = threading.RLock()
"""Forward passes run one at a time per process: torch's thread count is process-wide, and each
pass must run with its prior's recorded count."""


def default_threads() -> int:
    """Up to 4, and no more than the cores this process may run on (``taskset``, a
    container's CPU set), as ``--jobs`` counts them."""
    from lmgc_core.util.parallel import default_jobs

    return max(1, min(4, default_jobs()))


@dataclass(eq=False, kw_only=True)
class _Loaded(LoadedModel):
    """One loaded model and what the sessions need from it; its alphabet maps are
    ``(ids, ids as a tensor, the alphabet's rows of the head or None)``."""

    model: Any
    base: Any
    head: torch.Tensor | None
    """lm_head weight (vocab, hidden) when the alphabet head is exact for this architecture."""
    device: torch.device


# ------------------------------------------------------------------------------ determinism


def _settings(device: torch.device) -> tuple[Any, ...]:
    """The process-wide torch settings a forward pass changes (:func:`_compute`)."""
    det = (torch.are_deterministic_algorithms_enabled(),
           torch.is_deterministic_algorithms_warn_only_enabled())  # fmt: skip
    cuda = ()
    if device.type == "cuda":
        cuda = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)  # fmt: skip
    return torch.get_num_threads(), det, cuda


def _apply(settings: tuple[Any, ...]) -> None:
    threads, (det, warn_only), cuda = settings
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
    if cuda:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = cuda  # fmt: skip


@contextlib.contextmanager
def _compute(threads: int, device: torch.device) -> Iterator[None]:
    """Every forward pass runs with the recorded thread count, deterministic algorithms (TF32
    off and cuDNN deterministic on CUDA), without autograd; the caller's settings come back
    after it. They are process-wide: kept, they left a training loop that compresses its
    gradients on one thread with deterministic kernels from then on."""
    with _COMPUTE_LOCK:
        saved = _settings(device)
        cuda = (False, False, True, False) if device.type == "cuda" else ()
        try:
            _apply((threads, (True, True), cuda))
            with torch.inference_mode():
                yield
        finally:
            _apply(saved)


# ------------------------------------------------------------------------------ loading


def _architecture(path: Path) -> str:
    if models.is_gguf(path):
        return str(models.read_gguf_metadata(path).get("general.architecture", ""))
    try:
        return str(json.loads((path / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path / 'config.json'}: {exc}") from None


def _hf_vocab(path: Path, config: Any) -> tuple[list[str], str, np.ndarray, int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    n = len(tok)
    tokens = [t or "" for t in tok.convert_ids_to_tokens(list(range(n)))]
    spec = ""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        spec = backend.to_str()
    if '"byte_fallback":true' in spec.replace(" ", "") or "Metaspace" in spec:
        kind = "llama"
    elif "ByteLevel" in spec:
        kind = "gpt2"
    elif any(t.startswith("\u2581") for t in tokens[:5000]):
        kind = "llama"
    else:
        kind = "gpt2"
    types = np.full(n, models.TOKEN_NORMAL, dtype=np.int32)
    for tid in tok.all_special_ids:
        if 0 <= tid < n:
            types[tid] = models.TOKEN_CONTROL
    bos = tok.bos_token_id
    if bos is None:
        bos = getattr(config, "bos_token_id", None)
    if bos is None:
        bos = tok.eos_token_id if tok.eos_token_id is not None else config.eos_token_id
    if isinstance(bos, list):
        bos = bos[0]
    if bos is None:
        raise PluginError(f"model {path} has neither a BOS nor an EOS token to start windows with")
    return tokens, kind, types, int(bos)


def _load(path: Path, dtype: str, device: str) -> _Loaded:
    import transformers
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PluginError("device 'cuda' was requested but torch sees no CUDA device")
        # cuBLAS is deterministic only with a fixed workspace; must be set before its init.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype], "attn_implementation": "eager"}
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        stack = contextlib.ExitStack()
        stack.enter_context(_library_quiet())
        if models.is_gguf(path):
            for module in ("gguf", "accelerate"):
                if not _has(module):
                    raise PluginError(
                        f"loading a GGUF file with transformers needs {module!r}; "
                        "install it with: pip install 'lmgc[transformers]'"
                    )
            model = AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, **kwargs
            )
            meta = models.read_gguf_metadata(path)
            tokens, kind, types, bos = models.gguf_vocab(meta)
            if bos is None:
                raise PluginError(f"{path} has neither a BOS nor an EOS token id")
        else:
            model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
            tokens, kind, types, bos = _hf_vocab(path, model.config)
    except (OSError, ValueError) as exc:
        raise PluginError(
            f"transformers {transformers.__version__} cannot load {path}: {exc}"
        ) from None
    finally:
        stack.close()
        if bar:
            hf_logging.enable_progress_bar()
    model = model.to(dev).eval()
    model.requires_grad_(False)
    config = model.config
    head = None
    # decided from the file, like the fingerprint's "head" entry
    if _architecture(path) in ALPHABET_HEAD_TYPES:
        out = model.get_output_embeddings()
        if out is not None and getattr(out, "bias", None) is None:
            head = out.weight
    loaded = _Loaded(
        model=model,
        base=model.base_model,
        head=head,
        tokens=tokens,
        kind=kind,
        token_types=types,
        bos=bos,
        context=int(getattr(config, "max_position_embeddings", 0) or 1 << 30),
        device=dev,
    )
    return loaded


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ------------------------------------------------------------------------------ the prior


class TransformersPrior(LMPrior):
    """A causal LM run by PyTorch; ``model=None`` is the bundled SmolLM2-135M GGUF."""

    name = "transformers"
    impl_version: ClassVar[int] = IMPL_VERSION

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        threads: int | None = None,
        unmapped: str = "error",
        cpu_capability: str | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', not {device!r}") from None
        if dev.type not in ("cpu", "cuda"):
            raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', not {device!r}")
        if threads is None:
            threads = default_threads()
        check_positive("threads", threads, MAX_THREADS)
        self._model_options(model, unmapped)
        if cpu_capability is not None and not cpu.known(cpu_capability):
            raise ConfigError(f"cpu_capability {cpu_capability!r} is not one torch knows")
        self.requested_capability = cpu_capability
        self.dtype = dtype
        self.device = str(dev)
        self.threads = threads
        self._architecture = _architecture(self.path)

    # -- configuration ---------------------------------------------------------------------------
    def get_config(self) -> JSON:
        return {
            "model": self.model,
            "dtype": self.dtype,
            "device": self.device,
            "threads": self.threads,
            "unmapped": self.unmapped,
            "cpu_capability": self.requested_capability or self.cpu_capability(),
        }

    def cpu_capability(self) -> str | None:
        """torch's CPU kernel set in this process (``None`` on a GPU: the CPU computes nothing
        that reaches the coder)."""
        return cpu.current() if torch.device(self.device).type == "cpu" else None

    def fingerprint(self) -> JSON:
        import transformers

        return {
            **self.model_fingerprint(),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "dtype": self.dtype,
            "device": torch.device(self.device).type,
            "threads": self.threads,
            "attention": "eager",
            "head": "alphabet" if self._architecture in ALPHABET_HEAD_TYPES else "full",
            "token_map": self.token_map,
            "cpu_capability": self.cpu_capability(),
            "cpu_vendor": self.cpu_vendor(),
        }

    def cpu_vendor(self) -> str | None:
        """The CPU's vendor where the CPU computes the logits (``None`` on a GPU)."""
        return cpu.vendor() if torch.device(self.device).type == "cpu" else None

    def check_fingerprint(self, recorded: Mapping[str, Any]) -> None:
        """As the base check, and a different CPU kernel set is refused with the setting that
        selects the recorded one, another CPU vendor by name. Streams from before these were
        recorded have no ``cpu_capability`` / ``cpu_vendor``: they are let through (the SHA-256
        check still guards them)."""
        theirs = recorded.get("cpu_capability", _UNRECORDED)
        mine = self.cpu_capability()
        made_on, here = recorded.get("cpu_vendor", _UNRECORDED), self.cpu_vendor()
        rest = {k: v for k, v in recorded.items() if k not in ("cpu_capability", "cpu_vendor")}
        super().check_fingerprint({**rest, "cpu_capability": mine, "cpu_vendor": here})
        if made_on is not _UNRECORDED and made_on != here:
            raise MismatchError(
                f"prior {self.name!r}: cpu_vendor: the stream was made on a {made_on!r} CPU, "
                f"this one is {here!r}; torch's CPU matrix products take other code paths there "
                "and round differently: decode on a CPU of the same vendor"
            )
        if theirs is not _UNRECORDED and theirs != mine:
            hint = (
                f"start Python with {cpu.ENV}={cpu.env_value(theirs)} (this CPU must have {theirs})"
                if theirs is not None and mine is not None
                else "decode on the same kind of device"
            )
            raise MismatchError(
                f"prior {self.name!r}: cpu_capability: the stream was made with torch's "
                f"{theirs!r} CPU kernels, this process runs {mine!r}; they round differently. "
                f"torch picks them when it is imported: {hint}"
            )

    # -- model -------------------------------------------------------------------------------------
    def loaded(self) -> _Loaded:
        settings = (self.dtype, self.device)
        return MODELS.get(self.path, settings, partial(_load, self.path, *settings))

    def token_ids(self, alphabet: Sequence[bytes]) -> np.ndarray:
        """The vocabulary token id of every alphabet symbol."""
        return self._alphabet(alphabet)[0]

    def _alphabet(
        self, alphabet: Sequence[bytes]
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor | None]:
        lm = self.loaded()

        def with_head(ids: np.ndarray) -> tuple[np.ndarray, torch.Tensor, torch.Tensor | None]:
            tids = torch.as_tensor(ids, device=lm.device)
            head = None if lm.head is None else lm.head[tids].detach().clone().contiguous()
            return ids, tids, head

        return self.alphabet_map(alphabet, with_head)

    def open(
        self,
        alphabet: Sequence[bytes],
        batch_size: int,
        window: int,
        pattern: Sequence[int] = (-1,),
    ) -> PriorSession:
        lm = self.loaded()
        self.check_window(lm, window)
        self._check_capability()
        _, tids, head = self._alphabet(alphabet)
        return TorchSession(lm, tids, head, batch_size, window, self.threads)

    def _check_capability(self) -> None:
        """Refuse to compute with other kernels than the ones the config asks for."""
        want, have = self.requested_capability, self.cpu_capability()
        if want is not None and have is not None and cpu.env_value(want) != cpu.env_value(have):
            raise ConfigError(
                f"cpu_capability {want!r} was asked for, but torch was imported with {have!r} "
                f"kernels: start Python with {cpu.ENV}={cpu.env_value(want)} (torch reads it "
                "only when it is imported)"
            )

    def teacher_forced_scores(self, alphabet: Sequence[bytes], windows: np.ndarray) -> np.ndarray:
        """One full-sequence pass per window (BOS prepended): ``(n, L, A)`` float32 scores. The
        numbers differ from the step-wise ones in the last bits: an estimate only."""
        lm = self.loaded()
        _, tids, head = self._alphabet(alphabet)
        windows, out = self.teacher_forced_windows(lm, windows, len(alphabet))
        if out.size == 0:
            return out
        n, length = windows.shape
        heads = int(getattr(lm.model.config, "num_attention_heads", 16) or 16)
        chunk = max(1, min(n, (256 << 20) // (4 * heads * length * length), 4096 // length or 1))
        sym = torch.as_tensor(windows, device=lm.device)
        with _compute(self.threads, lm.device):
            for start in range(0, n, chunk):
                rows = sym[start : start + chunk]
                bos = torch.full((rows.shape[0], 1), lm.bos, dtype=torch.long, device=lm.device)
                inp = torch.cat([bos, tids[rows[:, :-1]]], dim=1)
                out[start : start + chunk] = _forward(lm, inp, tids, head, None, last=False)[0]
        return out


@contextlib.contextmanager
def _library_quiet() -> Iterator[None]:
    """transformers' deprecation notices (``past_key_values`` ...) and its GGUF conversion bar
    are not the user's business: with ``-W error`` / ``PYTHONWARNINGS=error`` a FutureWarning
    failed every run, and ``-q`` still printed the bar (loads and passes run one at a time per
    process, so the process-wide filters are safe here)."""
    import warnings

    from transformers.utils import logging as hf_logging

    from lmgc_core.util.progress import lm_bars_disabled

    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # a transformers without GGUF support: no such bar
        gguf_utils = None
    bar, verbosity = getattr(gguf_utils, "tqdm", None), hf_logging.get_verbosity()
    if bar is not None:  # its own bar, as lmgc's are: hidden with -q, off a terminal
        gguf_utils.tqdm = partial(bar, disable=lm_bars_disabled())
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar is not None:
            gguf_utils.tqdm = bar


def _forward(
    lm: _Loaded,
    input_ids: torch.Tensor,
    tids: torch.Tensor,
    head: torch.Tensor | None,
    past: Any,
    last: bool = True,
) -> tuple[np.ndarray, Any]:
    """Scores of the alphabet tokens after ``input_ids`` (last position, or every position)."""
    with _library_quiet():
        return _forward_quietly(lm, input_ids, tids, head, past, last)


def _forward_quietly(
    lm: _Loaded,
    input_ids: torch.Tensor,
    tids: torch.Tensor,
    head: torch.Tensor | None,
    past: Any,
    last: bool,
) -> tuple[np.ndarray, Any]:
    if head is not None:
        out = lm.base(input_ids=input_ids, past_key_values=past, use_cache=last)
        hidden = out.last_hidden_state[:, -1] if last else out.last_hidden_state
        scores = torch.nn.functional.linear(hidden, head)
    else:
        out = lm.model(
            input_ids=input_ids,
            past_key_values=past,
            use_cache=last,
            logits_to_keep=1 if last else 0,
        )
        logits = out.logits[:, -1] if last else out.logits
        scores = logits[..., tids]
    return scores.float().cpu().numpy(), out.past_key_values if last else None


class TorchSession(LMSession):
    """``B`` windows in lock-step with a KV cache; every call is one forward pass."""

    def __init__(
        self,
        lm: _Loaded,
        tids: torch.Tensor,
        head: torch.Tensor | None,
        batch_size: int,
        window: int,
        threads: int,
    ) -> None:
        super().__init__(TransformersPrior.name, batch_size, window)
        self.lm = lm
        self.tids = tids
        self.head = head
        self.threads = threads
        self.past: Any = None

    def _step(self, symbols: np.ndarray, bos: bool) -> np.ndarray:
        sym = np.asarray(symbols, dtype=np.int64).reshape(self.batch, -1)
        n = sym.shape[1] + (1 if bos else 0)
        self._room(n)
        lm = self.lm
        with _compute(self.threads, lm.device):
            inp = self.tids[torch.as_tensor(sym, device=lm.device)]
            if bos:
                first = torch.full((self.batch, 1), lm.bos, dtype=torch.long, device=lm.device)
                inp = torch.cat([first, inp], dim=1)
            scores, self.past = _forward(lm, inp, self.tids, self.head, self.past)
        self._fed(n)
        return scores

    def start(self, prefix: np.ndarray) -> np.ndarray:
        self.past = None
        self.length = 0
        return self._step(prefix, bos=True)

    def advance(self, symbols: np.ndarray) -> np.ndarray:
        if self.past is None:
            raise RuntimeError("advance() before start()")
        return self._step(symbols, bos=False)

    def close(self) -> None:
        super().close()
        self.past = None
