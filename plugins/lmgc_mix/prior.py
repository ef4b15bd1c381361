"""The ``mix`` prior: experts (any priors) combined per data symbol by :mod:`.mixing`.

Each expert entry is a prior config plus an optional ``consult``: the digit positions (indices
of the data symbols within the serializer's period, ``0`` = first) at which the mixture asks that
expert. At the other positions the expert is not called; the symbols it missed are fed to it in
one multi-token call the next time it is consulted, identically when encoding and decoding. A
language model consulted on the leading digits only thus runs a fraction of the steps. A digit
position at which no expert is consulted is coded with the uniform distribution (4 bits a hex
digit: what the noise digits of a float's mantissa cost anyway).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lmgc_core.coding.options import takes_option
from lmgc_core.components.interfaces import JSON, ArrayCoding, ContextScores, Prior, PriorSession
from lmgc_core.components.spec import ComponentSpec
from lmgc_core.util.errors import ConfigError, MismatchError

from .mixing import SHARE_BITS, PositionMixer
from .scores import expert_frequencies

VERSION = 1
DEFAULT_SHARE = 2.0**-10
DEFAULT_LR = 0.02


def _expert_spec(value: Any) -> tuple[ComponentSpec, list[int] | None]:
    """The expert's spec without ``consult`` (a mix option, not the expert's) and ``consult``."""
    spec = ComponentSpec.parse(value, "each mix expert")
    consult = spec.options.pop("consult", None)
    if consult is not None:
        if not isinstance(consult, list | tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in consult
        ):
            raise ConfigError(
                f"consult must be a list of digit positions (ints >= 0), not {consult!r}"
            )
        consult = sorted(set(consult))
    return spec, consult


MAX_EXPERTS = 16
"""Experts a mixture takes at most: each is built (a language model loads) and consulted on every
symbol, so a config (or a stream header) listing thousands is refused before anything is built."""


class MixPrior(Prior):
    name = "mix"
    wants_free_symbols = True
    default_window = 2048  # placeholders: an instance takes the largest window of its experts
    default_batch_size = 8  # and the smallest batch (an LM's 2048 x 8 when one is an expert)

    def __init__(
        self,
        experts: Sequence[Any] = ("adaptive",),
        share: float = DEFAULT_SHARE,
        lr: float = DEFAULT_LR,
        geometric: bool = True,
        uniform: bool = True,
        model: str | None = None,
        fallback: bool = True,
    ) -> None:
        if isinstance(experts, str | Mapping) or not isinstance(experts, Sequence) or not experts:
            raise ConfigError("experts must be a non-empty list of prior configs")
        if len(experts) > MAX_EXPERTS:  # every expert is built, and each may load a model
            raise ConfigError(f"mix takes at most {MAX_EXPERTS} experts, not {len(experts)}")
        if not isinstance(share, int | float) or not 0 <= share <= 0.5:
            raise ConfigError(f"share must be a number in [0, 0.5], not {share!r}")
        if not isinstance(lr, int | float) or not 0 <= lr <= 8:
            raise ConfigError(f"lr must be a number in [0, 8], not {lr!r}")
        for label, flag in (("geometric", geometric), ("uniform", uniform), ("fallback", fallback)):
            if not isinstance(flag, bool):
                raise ConfigError(f"{label} must be true or false, not {flag!r}")
        # absolute: the stream records it, and a decode elsewhere applies it to every expert
        model = None if model is None else os.path.abspath(os.path.expanduser(str(model)))
        self.experts: list[Prior] = []
        self.consult: list[list[int] | None] = []
        for value in experts:
            spec, consult = _expert_spec(value)
            if spec.name == self.name:
                raise ConfigError("a mix cannot have a mix as an expert")
            if model is not None and takes_option("prior", spec.name, "model"):
                spec.options["model"] = model  # where the model lives (not built first: the
                # recorded path may be gone, which is why a decode gives another one)
            self.experts.append(spec.build("prior"))
            self.consult.append(consult)
        self.model = model
        self.use_fallback = fallback
        self.share = float(share)
        self.lr = float(lr)
        self.geometric = geometric
        self.uniform = uniform
        self.default_window = max(e.default_window for e in self.experts)
        self.default_batch_size = min(e.default_batch_size for e in self.experts)
        self.thread_safe = all(e.thread_safe for e in self.experts)
        self.calls = [0] * len(self.experts)
        """Calls made to each expert's session (start + advance), for measurements."""
        self.steps = 0
        """Scores the mixture returned (one per data position of a batch)."""

    # -- configuration ---------------------------------------------------------------------------
    def _expert_configs(self) -> list[JSON]:
        out = []
        for expert, consult in zip(self.experts, self.consult, strict=True):
            spec: JSON = {"name": expert.name, **expert.get_config()}
            if consult is not None:
                spec["consult"] = consult
            out.append(spec)
        return out

    def full_config(self) -> JSON:
        """:meth:`get_config` with each expert's ``recorded_defaults`` written in, for
        ``Pipeline.get_config``: a level-2 float expert's config names no level, which a new
        configuration takes as level 1 (another expert: another fingerprint, other bytes)."""
        config = self.get_config()
        for spec, expert in zip(config["experts"], self.experts, strict=True):
            for key in getattr(type(expert), "recorded_defaults", {}):
                if key not in spec and hasattr(expert, key):
                    spec[key] = getattr(expert, key)
        return config

    def get_config(self) -> JSON:
        return {
            "experts": self._expert_configs(),
            "share": self.share,
            "lr": self.lr,
            "geometric": self.geometric,
            "uniform": self.uniform,
            "model": self.model,
            "fallback": self.use_fallback,
        }

    def _settings(self) -> JSON:
        return {
            "prior": "mix",
            "version": VERSION,
            "share": self._share_units(),
            "lr": self._lr_units(),
            "geometric": self.geometric,
            "uniform": self.uniform,
            "consult": self.consult,
        }

    def fingerprint(self) -> JSON:
        return {**self._settings(), "experts": [e.fingerprint() for e in self.experts]}

    def _share_units(self) -> int:
        return round(self.share * (1 << SHARE_BITS))

    def _lr_units(self) -> int:
        return round(self.lr * (1 << 16))

    def check_fingerprint(self, recorded: Mapping[str, Any]) -> None:
        self.for_stream(recorded)

    def fallback(self) -> Prior | None:
        """The first expert that codes whole arrays (e.g. ``float``): the pipeline keeps its stream
        when it is not larger than the mixture's, so ``mix`` never loses to its fast expert."""
        if not self.use_fallback:
            return None
        return next((e for e in self.experts if isinstance(e, ArrayCoding)), None)

    def for_stream(self, recorded: Mapping[str, Any]) -> Prior:
        """Checks the mixture's own settings, then each expert's fingerprint with that expert
        (so a mismatch names the expert, and an expert may pick a path for an older version)."""
        mine = self._settings()
        diffs = [
            f"{key}: stream has {recorded.get(key)!r}, this prior has {mine[key]!r}"
            for key in mine
            if recorded.get(key) != mine[key]
        ]
        fps = recorded.get("experts")
        if not isinstance(fps, list) or len(fps) != len(self.experts):
            count = len(fps) if isinstance(fps, list) else fps
            diffs.append(f"experts: stream has {count!r}, this prior has {len(self.experts)}")
        if diffs:
            raise MismatchError(
                f"prior 'mix' differs from the one that made the stream ({'; '.join(diffs)})"
            )
        chosen = []
        for i, (expert, fp) in enumerate(zip(self.experts, fps, strict=True)):
            if not isinstance(fp, Mapping):
                raise MismatchError(
                    f"mix expert {i} ({expert.name!r}): the stream has no fingerprint for it"
                )
            try:
                chosen.append(expert.for_stream(fp))
            except MismatchError as exc:
                raise MismatchError(f"mix expert {i} ({expert.name!r}): {exc}") from None
        if all(a is b for a, b in zip(chosen, self.experts, strict=True)):
            return self
        other = object.__new__(MixPrior)
        other.__dict__.update(self.__dict__)
        other.experts = chosen
        return other

    # -- coding ----------------------------------------------------------------------------------
    def open(
        self,
        alphabet: Sequence[bytes],
        batch_size: int,
        window: int,
        pattern: Sequence[int] = (-1,),
        free_symbols: Sequence[int] | None = None,
    ) -> PriorSession:
        if free_symbols is None:
            free_symbols = range(len(alphabet))
        return MixSession(self, alphabet, batch_size, window, pattern, free_symbols)


class MixSession(PriorSession):
    """The experts' sessions in lock-step, one :class:`PositionMixer` per digit position."""

    def __init__(
        self,
        prior: MixPrior,
        alphabet: Sequence[bytes],
        rows: int,
        window: int,
        pattern: Sequence[int],
        free_symbols: Sequence[int],
    ) -> None:
        self.prior = prior
        self.rows = rows
        self.size = len(alphabet)
        self.free = np.asarray(free_symbols, dtype=np.int64)
        self.lookup = np.zeros(self.size, dtype=np.int64)
        self.lookup[self.free] = np.arange(self.free.size)
        self.period = len(pattern)
        phases = [q for q in range(self.period) if pattern[q] < 0]
        self.digit = {q: d for d, q in enumerate(phases)}
        n_digits = max(len(phases), 1)
        self.asked = [  # per digit: the experts consulted there (none: the digit is coded uniform)
            [i for i, c in enumerate(prior.consult) if c is None or d in c] for d in range(n_digits)
        ]
        self.mixers: list[PositionMixer | None] = [
            PositionMixer(
                len(asked),
                rows,
                prior._share_units(),
                prior._lr_units(),
                prior.geometric,
                prior.uniform,
            )
            if asked
            else None
            for asked in self.asked
        ]
        self.sessions: list[PriorSession | None] = []
        try:
            for expert in prior.experts:
                self.sessions.append(expert.open(alphabet, rows, window, pattern))
        except BaseException:
            self.close()
            raise
        self.started = [False] * len(self.sessions)
        self.pending: list[list[np.ndarray]] = [[] for _ in self.sessions]
        self.pos = 0
        self.last: int | None = None  # digit whose mixer awaits the symbol it predicted

    def _ask(self, i: int) -> Any:
        """Feed expert ``i`` everything it has not seen yet (one call) and return its scores."""
        session = self.sessions[i]
        if session is None:
            raise RuntimeError("session is closed")
        fed = self.pending[i]
        symbols = fed[0] if len(fed) == 1 else np.concatenate(fed, axis=1)
        self.pending[i] = []
        self.prior.calls[i] += 1
        if not self.started[i]:
            self.started[i] = True
            return session.start(symbols)
        return session.advance(symbols)

    def _predict(self) -> ContextScores:
        d = self.digit.get(self.pos % self.period)
        table = np.zeros((self.rows, self.size), dtype=np.float64)
        self.prior.steps += d is not None
        if d is None or not self.asked[d]:  # not a data position, or no expert asked: uniform
            table[:, self.free] = 1.0
            self.last = None
            return ContextScores(table, None, linear=True)
        freqs = np.stack(
            [expert_frequencies(self._ask(i), self.free, self.rows) for i in self.asked[d]]
        )
        mixer = self.mixers[d]
        assert mixer is not None
        table[:, self.free] = mixer.predict(freqs)
        self.last = d
        return ContextScores(table, None, linear=True)

    def _feed(self, symbols: np.ndarray) -> None:
        symbols = np.asarray(symbols, dtype=np.int64).reshape(self.rows, -1)
        for fed in self.pending:
            fed.append(symbols)
        self.pos += symbols.shape[1]

    def start(self, prefix: np.ndarray) -> ContextScores:
        self._feed(prefix)
        return self._predict()

    def advance(self, symbols: np.ndarray) -> ContextScores:
        symbols = np.asarray(symbols, dtype=np.int64).reshape(self.rows, -1)
        mixer = None if self.last is None else self.mixers[self.last]
        if mixer is not None:
            mixer.update(self.lookup[symbols[:, 0]])
        self._feed(symbols)
        return self._predict()

    def close(self) -> None:
        sessions, self.sessions = self.sessions, [None] * len(self.sessions)
        for session in sessions:
            if session is not None:
                session.close()
