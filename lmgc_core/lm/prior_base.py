"""What the language-model priors share, written once: the llama.cpp and transformers plugins
differ only in how they load a model and run it.

* :class:`ModelCache`: models loaded once per process (keyed by file and settings), loads
  counted; :func:`plugin_functions` gives an LM plugin's light ``__init__`` its ``load_count``,
  ``clear_cache`` and ``model_loads`` hook without importing the backend;
* :class:`LoadedModel`: what a loaded model offers the prior (vocabulary, BOS, context, the
  alphabet maps built from it);
* :class:`LMPrior`: the ``model``/``unmapped`` options, the fingerprint entries every backend
  records, the alphabet's token map, window and teacher-forcing checks;
* :class:`LMSession`: a session's window bookkeeping and progress bar.

Backend-free like the rest of the core: never imports torch or llama_cpp.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from lmgc_core.components.hookspecs import hookimpl
from lmgc_core.components.interfaces import JSON, Prior, PriorSession
from lmgc_core.lm import models
from lmgc_core.util.errors import ConfigError

M = TypeVar("M")
TOKEN_MAP_RULE = "bytes-v1"
"""How alphabet symbols map to tokens (:func:`models.symbol_token_map`), recorded per stream."""


MAX_MODELS = 4
"""Models a process keeps loaded at once (a model of an older state of a file is dropped as
soon as the file's new one loads)."""


class ModelCache(Generic[M]):
    """Models loaded once per process: a Dask worker or a Zarr codec pays each load once."""

    def __init__(self) -> None:
        self._models: dict[tuple[Any, ...], M] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, path: Path, settings: tuple[Any, ...], load: Callable[[], M]) -> M:
        """The model of ``path`` (its :func:`~lmgc_core.lm.models.file_identity`: a file
        replaced or written to is loaded again) and ``settings``; ``load()`` runs under the
        cache's lock only when it is not cached."""
        key = (*models.file_identity(path), *settings)
        with self._lock:
            hit = self._models.get(key)
            if hit is None:
                hit = load()
                models.remember(self._models, key, hit, MAX_MODELS)  # a replaced file's goes
                self.loads += 1
            return hit

    def clear(self) -> None:
        """Drop every cached model (freed once no prior or session holds it)."""
        with self._lock:
            self._models.clear()


def plugin_functions(
    plugin: str,
) -> tuple[Callable[[], int], Callable[[], None], Callable[[], dict[str, int]]]:
    """``load_count``, ``clear_cache`` and the ``model_loads`` hook of the LM plugin package
    ``plugin``, reading the ``MODELS`` cache of ``<plugin>.prior`` only once that module is
    imported (discovery never imports the backend)."""

    def cache() -> ModelCache[Any] | None:
        return getattr(sys.modules.get(f"{plugin}.prior"), "MODELS", None)

    def load_count() -> int:
        """How many times this process has loaded a model (models are cached per process)."""
        models_ = cache()
        return 0 if models_ is None else models_.loads

    def clear_cache() -> None:
        """Drop every cached model (frees them once no prior or session holds them)."""
        models_ = cache()
        if models_ is not None:
            models_.clear()

    @hookimpl
    def model_loads() -> dict[str, int]:
        return {plugin: load_count()}

    return load_count, clear_cache, model_loads


@dataclass(eq=False, kw_only=True)
class LoadedModel:
    """A loaded model's vocabulary (see :func:`models.gguf_vocab`), BOS token and context, and
    the alphabet maps built for it (per alphabet and ``unmapped`` policy)."""

    tokens: list[str]
    kind: str
    token_types: Any
    bos: int
    context: int
    maps: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


MAX_THREADS = 1024
"""The most threads an LM prior's option (or a stream header) may ask for: 100,000 crashed
libgomp, and a few hundred on a small machine ran for minutes."""


def check_positive(label: str, value: Any, most: int | None = None) -> None:
    """``ConfigError`` unless ``value`` is an integer from 1 to ``most`` (no bound: None)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{label} must be a positive integer, not {value!r}")
    if most is not None and value > most:
        raise ConfigError(f"{label} must be at most {most}, not {value!r}")


class LMPrior(Prior):
    """Base of the LM priors; ``model=None`` is the bundled SmolLM2-135M GGUF. A subclass sets
    ``name`` (also its fingerprint's ``backend``) and ``impl_version`` and implements
    :meth:`loaded`."""

    impl_version: ClassVar[int]
    default_batch_size: ClassVar[int] = 8
    default_window: ClassVar[int] = 2048

    def _model_options(self, model: str | os.PathLike[str] | None, unmapped: str) -> None:
        """Checks and sets ``unmapped``, ``path`` (resolved) and ``model`` (``None`` stays
        ``None`` in the config: the bundled default wherever it is installed)."""
        if unmapped not in models.UNMAPPED_POLICIES:
            raise ConfigError(f"unmapped must be one of {models.UNMAPPED_POLICIES}")
        self.path = models.resolve_model(model)
        self.model = None if model is None else str(self.path)
        self.unmapped = unmapped

    def model_fingerprint(self) -> JSON:
        """The entries every backend records first: backend, version, model hash and format."""
        return {
            "backend": self.name,
            "impl": self.impl_version,
            "model_sha256": models.model_sha256(self.path),
            "model_format": "gguf" if models.is_gguf(self.path) else "hf",
        }

    @property
    def token_map(self) -> str:
        return f"{TOKEN_MAP_RULE}/{self.unmapped}"

    def loaded(self) -> Any:
        """The (cached) :class:`LoadedModel` of this prior's settings."""
        raise NotImplementedError

    def bos_id(self) -> int:
        return self.loaded().bos

    def alphabet_map(
        self, alphabet: Sequence[bytes], extend: Callable[[np.ndarray], Any] = lambda ids: ids
    ) -> Any:
        """``extend(ids)`` for the token ids of ``alphabet``, built once per loaded model."""
        lm = self.loaded()
        key = (tuple(bytes(s) for s in alphabet), self.unmapped)
        with lm.lock:
            hit = lm.maps.get(key)
            if hit is None:
                ids = models.symbol_token_map(
                    alphabet, lm.tokens, lm.kind, lm.token_types, self.unmapped
                )
                hit = lm.maps[key] = extend(ids)
        return hit

    def check_window(self, lm: LoadedModel, window: int) -> None:
        if window > lm.context:
            raise ConfigError(f"window {window} exceeds the model's context of {lm.context} tokens")

    def teacher_forced_windows(
        self, lm: LoadedModel, windows: np.ndarray, n_alphabet: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``windows`` as int64 and the zeroed ``(n, L, A)`` float32 scores to fill in (nothing
        to fill when it is empty); windows longer than the model's context are refused."""
        windows = np.asarray(windows, dtype=np.int64)
        n, length = windows.shape
        out = np.zeros((n, length, n_alphabet), dtype=np.float32)
        if out.size and length > lm.context:
            raise ConfigError(f"windows of {length} tokens exceed the model's context")
        return windows, out


class LMSession(PriorSession):
    """``batch`` windows of at most ``window`` tokens in lock-step; counts what was fed."""

    def __init__(self, backend: str, batch_size: int, window: int) -> None:
        self.batch = batch_size
        self.window = window
        self.length = 0
        self.bar = models.lm_progress(batch_size * window, f"{backend} {batch_size}x{window}")

    def _room(self, k: int) -> None:
        """Refuse to feed ``k`` more tokens per row than the window holds."""
        if self.length + k > self.window:
            raise ValueError(f"session fed {self.length + k} tokens, its window is {self.window}")

    def _fed(self, k: int) -> None:
        self.length += k
        self.bar.update(self.batch * k)

    def close(self) -> None:
        self.bar.close()
