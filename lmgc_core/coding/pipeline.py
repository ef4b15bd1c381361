"""``Pipeline``: a configured chain of stages, serializer, prior and coder.

The configuration is a plain JSON-able dict (``get_config``/``from_config``, as in numcodecs) and
travels inside every stream, so ``decompress(blob)`` needs nothing but the stream.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import xxhash

from lmgc_core.coding import provenance
from lmgc_core.coding import time_axis as series
from lmgc_core.coding.config_file import check_keys, check_size
from lmgc_core.coding.declared import declared_array, nonnegative
from lmgc_core.coding.options import valid_options
from lmgc_core.coding.parts import PartCoder, StoredCoder, decoder_for, encoder_for, part_entry
from lmgc_core.coding.rebuild_limit import rebuild_limit
from lmgc_core.coding.recorded import header_errors, options_errors, recorded_config
from lmgc_core.components import registry
from lmgc_core.components.interfaces import (
    ArrayCoding,
    DeltaCoding,
    EntropyCoder,
    Prior,
    Serializer,
    Stage,
)
from lmgc_core.components.spec import ComponentSpec, spec_dict, spec_name
from lmgc_core.stream import container, notes
from lmgc_core.util.bytes_layout import same_bits
from lmgc_core.util.caches import drop_oldest
from lmgc_core.util.dtypes import dtype_name, parse_dtype, refuse_masked
from lmgc_core.util.errors import (
    ChecksumError,
    ConfigError,
    LMGCError,
    MismatchError,
    OutOfMemoryError,
    PluginError,
    StreamError,
    UnknownOptionError,
)
from lmgc_core.util.mappings import is_mapping
from lmgc_core.util.parallel import in_background, resolve_jobs

DEFAULTS: dict[str, Any] = {
    "stages": [],
    "serializer": {"name": "hex"},
    "prior": {"name": "float"},
    "coder": {"name": "range"},
    "window": None,
    "batch": None,
    "level": None,
}
"""``level`` (as in zstd) is shorthand for the prior's own ``level`` option: it is merged into the
prior's spec, so streams record it there (in the prior's config) and never as a pipeline key."""
LEVELLED_PRIORS = ("float",)
"""Built-in priors that take a ``level`` (named in the error for one that does not)."""
Progress = Callable[[int], None]


def _component(kind: str, spec: Any) -> Any:
    return ComponentSpec.parse(spec, kind).build(kind)


def _prior_at_level(spec: Any, level: Any) -> Any:
    """The prior built from ``spec`` with ``level`` merged into its options; a clear error for a
    prior that has no levels (instead of a bare "unexpected keyword")."""
    if level is None:
        return _component("prior", spec)
    spec = spec_dict(spec)
    name = spec_name(spec) if isinstance(spec, Mapping) else None
    if isinstance(spec, Mapping) and spec.get("level", level) != level:
        raise ConfigError(
            f"level {level!r} conflicts with the prior's own level {spec['level']!r}; give one"
        )
    none = ConfigError(
        f"level applies to priors with levels ({', '.join(LEVELLED_PRIORS)}); "
        f"prior {name!r} has none"
    )
    if isinstance(name, str) and "level" not in (valid_options("prior", name) or ["level"]):
        raise none
    try:
        prior = _component("prior", {**spec, "level": level} if name else spec)
    except UnknownOptionError as exc:  # the registry's check: no ``level`` among its options
        if exc.unknown == ["level"]:
            raise none from None
        raise
    if getattr(prior, "level", None) != level:  # a factory that swallowed the option
        raise none
    return prior


def _spec(component: Any) -> dict[str, Any]:
    return ComponentSpec.of(component).to_dict()


def _sha256(array: np.ndarray) -> str:
    """Hash of the exact bytes, shape included (so a reshaped result cannot pass)."""
    h = hashlib.sha256(repr(tuple(array.shape)).encode())
    h.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    return h.hexdigest()


MAX_WINDOW_CELLS = 1 << 25
"""Most ``window * batch`` a pipeline takes: the step loop holds a (window, batch) matrix of
int64 symbols for every batch, the last one padded to full size, so a stream's recorded batch of
2^40 cost 1.1 GB for one 4-byte block. The defaults use 2^23 (512 x 16,384); the paper's window
of 2,048 with them, 2^25."""


MAX_STAGES = 16
"""Stages a pipeline may chain. Each stage's inverse runs over the whole array (a random-k
sparsify regenerates its positions), so a header of a few KB chaining thousands of them decoded
for half an hour before its checksum failed; real pipelines chain one to three."""


class Pipeline:
    """stages -> serializer -> prior + entropy coder, with ``window``/``batch`` layout."""

    def __init__(
        self,
        serializer: Serializer,
        prior: Prior,
        coder: EntropyCoder,
        stages: Sequence[Stage] = (),
        window: int | None = None,
        batch: int | None = None,
    ) -> None:
        window = prior.default_window if window is None else window
        if not isinstance(window, int) or isinstance(window, bool):
            raise ConfigError(f"window must be an integer number of tokens, not {window!r}")
        least = max(2, serializer.period + 1)  # a smaller one would overflow every window
        if window < least:
            raise ConfigError(
                f"window {window} is too small: it must hold the BOS token and one serializer "
                f"period ({serializer.period} symbols), so at least {least}"
            )
        if batch is not None and (
            not isinstance(batch, int) or isinstance(batch, bool) or batch < 1
        ):
            raise ConfigError(f"batch must be a positive integer or null, not {batch!r}")
        batch = batch or prior.default_batch_size
        if window * batch > MAX_WINDOW_CELLS:
            raise ConfigError(
                f"window {window} x batch {batch} is over "
                f"{MAX_WINDOW_CELLS} symbols per step batch (a step-coded prior decodes a whole "
                "batch at once, padded to full size)"
            )
        self.serializer = serializer
        self.prior = prior
        self.coder = coder
        self.stages = list(stages)
        self.window = window
        self.batch = batch
        self._part_coder = encoder_for(prior, *self._pieces())
        """How every part is coded (chosen once: the prior's array path, or the step loop)."""
        self._checked: dict[str, Prior] = {}
        """:meth:`check_stream`'s answers by the recorded entries' JSON text (thread-safe priors
        only): a checkpoint's streams record a few configurations, checked once each."""

    # -- configuration -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None = None, **overrides: Any) -> Pipeline:
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(
                f"a pipeline configuration is a mapping (e.g. {{'prior': 'adaptive'}}), not a "
                f"{type(config).__name__}: {config!r:.60}"
            )
        cfg = {**DEFAULTS, **(config or {}), **overrides}
        # a dict from anywhere (Zarr metadata someone else wrote) meets the caps a config file
        # meets, before any component is built
        check_size(cfg, "pipeline configuration")
        return cls._build(cfg)

    @classmethod
    def _build(cls, cfg: dict[str, Any]) -> Pipeline:
        """:meth:`from_config` once ``cfg`` (every key present) is known to be of bounded size:
        checked by :func:`check_size`, or parsed from a stream header whose text
        :func:`container.check_json_text` bounded (a re-walk costs ~0.5 ms for a model's
        layout, on every decode)."""
        check_keys(cfg, DEFAULTS)
        if not isinstance(cfg["stages"], list | tuple):
            raise ConfigError("stages must be a list")
        if len(cfg["stages"]) > MAX_STAGES:
            raise ConfigError(
                f"{len(cfg['stages'])} stages: a pipeline has at most {MAX_STAGES} (each runs "
                "over the whole array when decoding)"
            )
        return cls(
            serializer=_component("serializer", cfg["serializer"]),
            prior=_prior_at_level(cfg["prior"], cfg["level"]),
            coder=_component("coder", cfg["coder"]),
            stages=[_component("stage", s) for s in cfg["stages"]],
            window=cfg["window"],
            batch=cfg["batch"],
        )

    def recorded_config(self) -> dict[str, Any]:
        """The configuration a stream header records (its ``pipeline``). Headers are read inside
        :func:`~lmgc_core.components.registry.recorded`, where an option left out means what its
        absence has always meant (a component's ``recorded_defaults``: the float prior's level
        2), so this form leaves such options out and old streams keep their meaning."""
        return {
            "stages": [_spec(s) for s in self.stages],
            "serializer": _spec(self.serializer),
            "prior": _spec(self.prior),
            "coder": _spec(self.coder),
            "window": self.window,
            "batch": self.batch,
        }

    def get_config(self) -> dict[str, Any]:
        """The full configuration: ``Pipeline.from_config(p.get_config())`` builds the same
        pipeline. :meth:`recorded_config` with the options its form leaves out put back (a
        level-2 float prior's ``level``, which a new configuration would otherwise take as 1)."""
        config = self.recorded_config()
        prior = config["prior"]
        for key in getattr(type(self.prior), "recorded_defaults", {}):
            if key not in prior and hasattr(self.prior, key):
                prior[key] = getattr(self.prior, key)
        full = getattr(self.prior, "full_config", None)  # a prior made of parts (a mix's experts)
        if callable(full):
            prior.update(full())
        return config

    # -- stages ----------------------------------------------------------------------------------
    def _forward(self, array: np.ndarray) -> tuple[dict[str, np.ndarray], list[Any]]:
        parts: dict[str, np.ndarray] = {"data": array.reshape(-1)}
        states = []
        for stage in self.stages:
            parts, state = stage.forward(parts)
            states.append(state)
        return parts, states

    def _inverse(
        self, parts: dict[str, np.ndarray], states: list[Any], dtype: np.dtype, shape: tuple
    ) -> np.ndarray:
        for stage, state in zip(reversed(self.stages), reversed(states), strict=True):
            parts = stage.inverse(parts, state)
        return np.asarray(parts["data"]).astype(dtype, copy=False).reshape(shape)

    def _expected(
        self, arr: np.ndarray, parts: dict[str, np.ndarray], states: list[Any]
    ) -> np.ndarray:
        """What decoding will rebuild from ``parts``: the stages' inverse with their states as
        the header gives them back (through JSON: a tuple in a state came back a list, and the
        stream failed its checksum). Stages that all claim to be lossless must rebuild ``arr``
        bit for bit: a false claim made "identical to the source" false, exit 0."""
        names = ", ".join(repr(stage.name) for stage in self.stages)
        try:
            as_read = json.loads(json.dumps(states, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise PluginError(f"a state of the stages ({names}) is not JSON: {exc}") from None
        expected = self._own_inverse({k: v.copy() for k, v in parts.items()}, as_read, arr)
        lossless = all(getattr(stage, "lossless", False) for stage in self.stages)
        if lossless and not same_bits(expected, arr):
            raise PluginError(
                f"the stages ({names}) all say they are lossless, but their inverse does not "
                "rebuild the input bit for bit: a stage's `lossless` is wrong"
            )
        return expected

    def reconstruct(self, array: Any) -> np.ndarray:
        """What decoding returns for ``array``: the stages' own reconstruction (exact copy when
        every stage is lossless)."""
        arr = _as_array(array)
        parts, states = self._forward(arr)
        return self._own_inverse(parts, states, arr)

    def _own_inverse(
        self, parts: dict[str, np.ndarray], states: list[Any], arr: np.ndarray
    ) -> np.ndarray:
        """The stages' inverse of their own forward output of ``arr``: where it cannot even
        be shaped as ``arr`` (a stage returned other sizes), the stages' fault, by name."""
        try:
            return self._inverse(parts, states, arr.dtype, arr.shape)
        except (ValueError, TypeError) as exc:
            names = ", ".join(repr(stage.name) for stage in self.stages)
            raise PluginError(
                f"the stages ({names}) do not rebuild an array of {arr.dtype} {arr.shape} from "
                f"their own output: {exc}"
            ) from None

    # -- coding ----------------------------------------------------------------------------------
    def _pieces(self) -> tuple[Serializer, EntropyCoder, int, int]:
        return self.serializer, self.coder, self.window, self.batch

    def compress(
        self,
        array: Any,
        progress: Progress | None = None,
        jobs: int | None = 1,
        *,
        base: Any = None,
        base_name: str | None = None,
    ) -> bytes:
        """Code ``array``; ``jobs`` threads code independent blocks (``None``: all cores) where
        the prior allows it. The bytes do not depend on ``jobs``.

        ``base``: an array of the same dtype and shape to code ``array`` against (the prior's
        :class:`DeltaCoding`; ``ConfigError`` for a prior without one, for stages, or for a base
        of another dtype or shape). The header then records the base's SHA-256 (and
        ``base_name``), and decoding needs that very base."""
        provenance.check_replay(self)
        _check_progress(progress)
        if base is None and base_name is not None:  # recorded nowhere: said, not dropped
            raise ConfigError("base_name names a base, but no base= was given")
        jobs = resolve_jobs(jobs)  # checked whatever the prior: a bad value is the caller's
        jobs = jobs if self.prior.thread_safe else 1
        arr = _as_array(array)
        ref = None if base is None else self._check_base_for(arr, base, base_name)
        part_coder = self._delta_coder if ref is not None else self._part_coder
        # before the coding: what the stream records of the prior (an LM's model hash) is what
        # coded it, or the run fails below (a model file replaced or written to meanwhile)
        fingerprint = self.prior.fingerprint()
        parts, states = self._forward(arr)
        expected = self._expected(arr, parts, states) if self.stages else arr
        value_checksum = None if ref is not None else self._value_checksum(self.prior)
        # With spare cores the checksum runs beside the coding (hashlib releases the GIL), so it
        # is not a serial step in front of a parallel one.
        checksum = None if value_checksum else in_background(partial(_sha256, expected), jobs)
        part_headers, blocks = [], []
        for name, data in parts.items():
            data = np.ascontiguousarray(data).reshape(-1)
            shape = arr.shape if data.size == arr.size and arr.ndim else (data.size,)
            fields, coded = part_coder.encode(
                data, tuple(shape), jobs, progress, None if ref is None else ref.reshape(-1)
            )
            blocks.extend(coded)
            part_headers.append(part_entry(name, data, fields))
        if value_checksum and any(h.get("coding") != "array" for h in part_headers):
            value_checksum, checksum = None, partial(_sha256, expected)  # a part was stored
        if self.prior.fingerprint() != fingerprint:
            raise MismatchError(
                f"prior {self.prior.name!r} changed while it coded (its model file was replaced "
                "or written to): the stream would record other weights than the ones that "
                "coded it; compress again once the file is complete"
            )
        header = {
            "pipeline": self.recorded_config(),
            "prior": fingerprint,
            "made_by": provenance.made_by(self),
            "array": {"dtype": dtype_name(arr.dtype), "shape": list(arr.shape)},
            **({"checksum": value_checksum} if checksum is None else {"sha256": checksum()}),
            "stages": states,
            "parts": part_headers,
        }
        if ref is not None:
            header["base"] = {"sha256": base_sha256(ref), "xxh3_128": base_xxh3_128(ref)}
            if base_name is not None:
                header["base"]["name"] = base_name
        if stored_only(header):  # decoded by copying: nothing of the prior binds the stream
            del header["prior"]  # (an LM's model hash and CPU features: no machine, any size)
        blob = container.pack(header, blocks, jobs)
        alternative = None if ref is not None else self._fallback_pipeline()
        if alternative is not None:
            other = alternative.compress(arr, jobs=jobs)
            if len(other) <= len(blob):
                return other
        return blob

    @property
    def _delta_coder(self) -> PartCoder:
        return encoder_for(self.prior, *self._pieces(), delta=True)

    def check_deltas(self, what: str) -> None:
        """``ConfigError`` (its message led by ``what``: ``--base``, ``time_axis``) unless this
        pipeline can code an array against a base: no stages (they change the values) and a
        prior with a delta path. Callers check it before anything is written."""
        if self.stages:
            raise ConfigError(f"{what} needs a pipeline without stages (they change the values)")
        if not isinstance(self.prior, DeltaCoding):
            raise ConfigError(
                f"{what}: prior {self.prior.name!r} cannot code against a base (it has no delta "
                "path); use the float prior"
            )

    def _check_base_for(self, arr: np.ndarray, base: Any, name: str | None) -> np.ndarray:
        """``base`` as a C-contiguous array, refused (``ConfigError``) where no delta can be
        coded: stages (the parts are no longer the array), a prior without a delta path, or a
        base of another dtype or shape."""
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"base_name must be a string, not {name!r}")
        self.check_deltas("base=")
        ref = _as_array(base)
        if ref.dtype != arr.dtype or ref.shape != arr.shape:
            raise ConfigError(
                f"the base ({ref.dtype}{list(ref.shape)}) must have the array's dtype and shape "
                f"({arr.dtype}{list(arr.shape)})"
            )
        return ref

    def _value_checksum(self, prior: Prior) -> str | None:
        """The name of the checksum ``prior`` records and verifies in every block of the values
        it codes (``value_checksum``), when that covers the whole array: no stages, so the one
        part *is* the array. Such a stream carries no SHA-256; else ``None``."""
        name = getattr(prior, "value_checksum", None)
        ok = not self.stages and isinstance(prior, ArrayCoding) and isinstance(name, str)
        return name if ok else None

    def _verifies_checksum(self, prior: Prior, name: object) -> bool:
        """Whether ``prior`` checks the value checksum ``name`` a stream's header records, over
        the whole array: one it writes (:meth:`_value_checksum`) or an older one it still reads
        (its optional ``value_checksums``)."""
        mine = self._value_checksum(prior)
        return mine is not None and name in (mine, *getattr(prior, "value_checksums", ()))

    def _fallback_pipeline(self) -> Pipeline | None:
        """The pipeline of the prior's fallback (see :meth:`Prior.fallback`): same serializer,
        coder and stages, the fallback's own window and batch, exactly as if configured alone."""
        fallback = self.prior.fallback()
        if fallback is None:
            return None
        return Pipeline(self.serializer, fallback, self.coder, self.stages)

    def _made_by_fallback(self, header: Mapping[str, Any]) -> Pipeline | None:
        recorded = header.get("pipeline")
        name = spec_name(recorded.get("prior")) if is_mapping(recorded) else None
        if name == self.prior.name:
            return None
        alternative = self._fallback_pipeline()
        return alternative if alternative is not None and name == alternative.prior.name else None

    def check_stream(self, header: Mapping[str, Any], key: str | None = None) -> Prior:
        """Refuse a stream whose layout or prior differs from this pipeline's; returns the prior
        that decodes it (see :meth:`Prior.for_stream`). ``key``: :func:`stream_key` of
        ``header`` when the caller has it."""
        key = stream_key(header) if key is None else key
        hit = self._checked.get(key) if key is not None else None
        if hit is not None:
            return hit
        prior = self._check_stream(header)
        if key is not None and self.prior.thread_safe:  # a read-only prior: safe to share
            if len(self._checked) >= MAX_RECORDED_PIPELINES:
                self._checked.clear()
            self._checked[key] = prior
        return prior

    def _stream_prior(self, header: Mapping[str, Any], key: str | None, force: bool) -> Prior:
        """The prior that decodes ``header``'s stream; ``force``: this pipeline's own where the
        stream's differs. A matching stream still gets the prior its version needs: with
        --force, an old adaptive stream (log-domain scores) failed its checksum."""
        try:
            return self.check_stream(header, key)
        except MismatchError:
            if not force:
                raise
            return self.prior

    def _check_stream(self, header: Mapping[str, Any]) -> Prior:
        recorded = header.get("pipeline", {})
        if not isinstance(recorded, Mapping):
            raise StreamError("stream header has a bad pipeline configuration")
        mine = self.recorded_config()
        diffs = [
            f"{key}: stream has {recorded.get(key)!r}, this pipeline has {mine[key]!r}"
            for key in sorted(mine)
            if key != "prior" and recorded.get(key) != mine[key]
        ]
        prior_name = spec_name(recorded.get("prior"))
        if prior_name != self.prior.name:
            diffs.append(f"prior: stream has {prior_name!r}, this pipeline has {self.prior.name!r}")
        if diffs:
            raise MismatchError(
                "the stream was made with a different pipeline (" + "; ".join(diffs) + ")"
            )
        recorded = header.get("prior", {})
        if not isinstance(recorded, Mapping):
            raise StreamError("stream header has a bad prior fingerprint")
        return self.prior.for_stream(recorded)

    def decompress(
        self,
        blob: bytes,
        force: bool = False,
        progress: Progress | None = None,
        jobs: int | None = 1,
        max_nbytes: int | None = None,
        *,
        head: tuple[dict[str, Any], int] | None = None,
        base: Any = None,
        _key: str | None = None,
        _declared: tuple[np.dtype, tuple[int, ...]] | None = None,
    ) -> np.ndarray:
        """Decode ``blob``. ``max_nbytes``: refuse (:class:`StreamError`, before anything is
        allocated or decoded) a stream whose header declares a bigger array: a few bytes of
        stream may legitimately stand for gigabytes of zeros, so only the caller knows how much
        it is ready to receive (a ``out=`` buffer, a chunk, a manifest entry). ``head``:
        :func:`container.read_header`'s result for ``blob`` when the caller has it (a header is
        then verified and parsed once, which counts for small chunks). ``base``: the array a
        stream made with ``compress(..., base=)`` was coded against; a stream that records a base
        is refused (:class:`MismatchError`, naming the base) without it or with another one (its
        SHA-256 differs), before anything is decoded. A stream made without a base ignores it."""
        _check_progress(progress)
        blob = container.stream_bytes(blob)  # a buffer of other items: its bytes
        head = container.read_header(blob) if head is None else head
        header = head[0]
        if stored_only(header):  # raw bytes: nothing of this pipeline's prior is used
            return decode_stored(blob, head, max_nbytes)
        # ``_key``, ``_declared``: the header's stream key and declared_array(header, max_nbytes)
        # when the caller has them (lmgc_core.decompress), so a small tensor's decode does
        # each once
        declared = _declared
        ref = None
        if "base" in header:  # refused by name before the decode (and its provenance notes)
            declared = declared_array(header, max_nbytes) if declared is None else declared
            ref = check_base(header, base, *declared)
        return self._decode(
            blob,
            force,
            progress,
            jobs,
            max_nbytes,
            head=head,
            ref=ref,
            key=_key,
            declared=declared,
        )

    @provenance.explain_decode_failures
    def _decode(
        self,
        blob: bytes,
        force: bool,
        progress: Progress | None,
        jobs: int | None,
        max_nbytes: int | None,
        *,
        head: tuple[dict[str, Any], int],
        ref: np.ndarray | None,
        key: str | None = None,
        declared: tuple[np.dtype, tuple[int, ...]] | None = None,
    ) -> np.ndarray:
        """:meth:`decompress` once the base (if the stream records one) is checked (``key``: the
        header's :func:`stream_key`, ``declared``: its :func:`declared_array` with
        ``max_nbytes``, when known)."""
        header = head[0]
        alternative = self._made_by_fallback(header)
        if alternative is not None:  # the fallback's stream was the smaller one
            return alternative._decode(
                blob, force, progress, jobs, max_nbytes, head=head, ref=ref, declared=declared
            )
        dtype, shape = declared_array(header, max_nbytes) if declared is None else declared
        count = math.prod(shape)
        nbytes = dtype.itemsize * count
        try:
            states = list(header["stages"])
            part_specs = list(header["parts"])
            checksum = header.get("checksum")
            expected_hash = None if checksum is not None else str(header["sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StreamError(f"header is missing or has a bad field: {exc}") from None
        if len(states) != len(self.stages):
            raise StreamError("header stage states do not match its stage list")
        _check_parts(part_specs, dtype, count, bool(self.stages))
        prior = self._stream_prior(header, key, force)
        codings = [p.get("coding") if is_mapping(p) else None for p in part_specs]
        # only a prior that verifies every block of the one part may stand in for SHA-256
        if checksum is not None and (
            not self._verifies_checksum(prior, checksum) or codings.count("array") < len(codings)
        ):
            raise StreamError(
                f"stream header names checksum {checksum!r}, which this pipeline and prior "
                f"({prior.name}) do not verify"
            )
        # a part whose decoder catches every changed byte of its blocks needs no second check
        # of the same bytes by CRC32 ("What checks what" in docs/format.md)
        own = [i for i, spec in enumerate(part_specs) if _checks_own_blocks(prior, spec)]
        # zlib's CRC-32, computed faster, for the blocks the container checks
        crc32 = getattr(prior, "block_crc32", None) if len(own) < len(part_specs) else None
        jobs = resolve_jobs(jobs)  # checked whatever the prior: a bad value is the caller's
        jobs = jobs if prior.thread_safe else 1
        box = container.unpack(blob, head, unverified_parts=own, crc32=crc32, jobs=jobs)
        if ref is None and "delta" in codings:
            raise StreamError("stream has a part coded against a base but records no base")
        blocks = iter(box.blocks)
        parts: dict[str, np.ndarray] = {}
        try:
            for spec in part_specs:
                parts[spec["name"]] = self._decode_part(spec, blocks, progress, prior, jobs, ref)
        except MemoryError:
            raise OutOfMemoryError(_OUT_OF_MEMORY.format(nbytes)) from None
        except (TypeError, KeyError) as exc:
            raise StreamError(f"bad part entry in header: {exc}") from None
        try:
            result = self._rebuild(parts, states, dtype, shape, nbytes)
        except LMGCError:
            raise
        except MemoryError:  # a stage state declaring a huge part
            raise OutOfMemoryError(_OUT_OF_MEMORY.format(nbytes)) from None
        except (KeyError, ValueError, TypeError, IndexError, AttributeError, OverflowError) as exc:
            raise ChecksumError(f"decoded data does not rebuild the array: {exc}") from None
        if (
            expected_hash is not None
            and not self._values_checked(prior, part_specs, own)
            and (_sha256(result) != expected_hash)
        ):
            raise ChecksumError(
                "decoded data does not match the original's SHA-256: the stream was made with a "
                "different prior or is corrupted"
            )
        return result

    def _rebuild(
        self,
        parts: dict[str, np.ndarray],
        states: list[Any],
        dtype: np.dtype,
        shape: tuple[int, ...],
        nbytes: int,
    ) -> np.ndarray:
        """The stages' inverse, where no part rebuilt may hold more values than the array has
        bytes (:func:`rebuild_limit`); without stages the one part is the array, and nothing
        rebuilds (the limit's context cost ~1.2 us)."""
        if not self.stages:
            return self._inverse(parts, states, dtype, shape)
        with rebuild_limit(nbytes):
            return self._inverse(parts, states, dtype, shape)

    def _values_checked(self, prior: Prior, part_specs: list[Any], own: list[int]) -> bool:
        """Whether decoding checked every value against its block's own checksum (the blocks'
        CRC32s bind them to their places): a second pass over the array by SHA-256 would only
        repeat that."""
        if self.stages or not part_specs or own:  # own: a CRC32 left unchecked
            return False
        return all(_checks_values(prior, spec) for spec in part_specs)

    def _decode_part(
        self,
        spec: Mapping[str, Any],
        blocks: Any,
        progress: Progress | None,
        prior: Prior,
        jobs: int,
        base: np.ndarray | None = None,
    ) -> np.ndarray:
        try:
            dtype = parse_dtype(spec["dtype"])
            count = int(spec["count"])
            len(spec["blocks"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StreamError(f"bad part entry in header: {exc}") from None
        if count < 0:
            raise StreamError("negative part length in header")
        coder = decoder_for(spec, prior, *self._pieces())
        flat = None if base is None else base.reshape(-1)
        return coder.decode(spec, blocks, dtype, count, jobs, progress, flat)

    # -- estimate --------------------------------------------------------------------------------
    def estimate(self, array: Any, teacher_forced: bool = False) -> dict[str, Any]:
        """Ideal code length (sum of -log2 p) without producing a stream.

        The default walks the same step loop as coding; ``teacher_forced=True`` uses the prior's
        one-pass-per-window fast path when it has one (the paper's measurement). A prior with an
        array path codes fast: its real size is the estimate (``method: coded``)."""
        arr = _as_array(array)
        parts, _ = self._forward(arr)
        bits, n_free, method = 0.0, 0, "step"
        for data in parts.values():
            data = np.ascontiguousarray(data).reshape(-1)
            shape = arr.shape if data.size == arr.size and arr.ndim else (data.size,)
            part_bits, part_free, part_method = self._part_coder.estimate(
                data, tuple(shape), teacher_forced
            )
            bits += part_bits
            n_free += part_free
            if part_method != "step":
                method = part_method
        return {
            "method": method,
            "ideal_bits": bits,
            "ideal_bytes": bits / 8,
            "original_bytes": int(arr.nbytes),
            "free_symbols": n_free,
            "bits_per_symbol": bits / n_free if n_free else 0.0,
            "rate_percent": 100 * bits / 8 / arr.nbytes if arr.nbytes else 0.0,
        }


def _checks_own_blocks(prior: Prior, spec: Any) -> bool:
    """Whether ``prior`` catches every changed byte of the blocks of the array-coded part
    ``spec`` itself (its optional ``checks_own_blocks(meta)``), so their CRC32 can go unchecked."""
    return _part_check(prior, "checks_own_blocks", "array", spec)


def _checks_values(prior: Prior, spec: Any) -> bool:
    """Whether ``prior`` checks every value of the delta-coded part ``spec`` against a checksum
    in its blocks (its optional ``checks_delta_values(meta)``), so the stream's SHA-256 of the
    whole array need not be recomputed. Only for parts whose blocks the container CRC-checked:
    a block's checksum covers its values, the CRC32 in the (checked) header its place."""
    return _part_check(prior, "checks_delta_values", "delta", spec)


def _part_check(prior: Prior, hook: str, coding: str, spec: Any) -> bool:
    """The answer of ``prior``'s optional ``hook(meta)`` for a part ``spec`` coded as ``coding``
    (its metadata under that key); ``False`` without the hook or for any other part."""
    check = getattr(prior, hook, None)
    if check is None or not is_mapping(spec) or spec.get("coding") != coding:
        return False
    meta = spec.get(coding)
    return bool(check(meta)) if is_mapping(meta) else False


def _check_progress(progress: Any) -> None:
    """The caller's ``progress`` (called with counts of symbols): anything else failed deep in
    decoding, where the error blamed the stream."""
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable, not a {type(progress).__name__}")


def _as_array(array: Any) -> np.ndarray:
    """``array`` as a C-ordered ndarray of a dtype a pipeline codes; a masked array with
    masked values is refused (np.asarray dropped its mask: other values came back, silently),
    and what numpy cannot read (a torch bf16 or grad tensor) is said in words."""
    refuse_masked(array)
    try:
        arr = np.asarray(array)
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as exc:
        hint = ""
        if type(array).__module__.startswith("torch"):
            hint = "; a torch tensor: tensor.detach().cpu().numpy(), bfloat16 and float8 through "
            hint += "an integer view to ml_dtypes, or lmgc_core.safetensors.torch.save_file"
        kind = type(array).__name__
        raise ConfigError(f"cannot read a {kind} as an array: {exc}{hint}") from None
    dtype_name(arr.dtype)  # raises ConfigError for unsupported dtypes
    return arr if arr.flags.c_contiguous else arr.copy(order="C")  # keeps 0-d arrays 0-d


def read_header(blob: bytes) -> dict[str, Any]:
    """The verified JSON header of a stream (no decoding)."""
    return container.read_header(blob)[0]


def base_sha256(base: np.ndarray) -> str:
    """The SHA-256 a stream records for its base: of the base's C-order bytes (its dtype and
    shape must equal the stream's array, which the header records)."""
    return hashlib.sha256(np.ascontiguousarray(base).reshape(-1).view(np.uint8)).hexdigest()


def base_xxh3_128(base: np.ndarray) -> str:
    """The XXH3-128 (hex, ``xxhash.xxh3_128_hexdigest``) a stream records beside the base's
    SHA-256, of the same bytes: what decoding checks, ~7 GB/s against SHA-256's ~1 (which took
    44 % of a delta decode: GPT weights against the previous checkpoint, 55 ms of which 24 ms
    hashed the base). Either tells a wrong base from the right one; the SHA-256 stays the name
    by which a user finds the file."""
    return xxhash.xxh3_128_hexdigest(np.ascontiguousarray(base).reshape(-1).view(np.uint8))


def recorded_base(header: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``base`` entry of a stream header (``{"sha256", "xxh3_128"?, "name"?}``; streams
    before 2026-12-05 have no ``xxh3_128``), ``None`` for a stream coded alone; ``StreamError``
    for a malformed one."""
    entry = header.get("base")
    if entry is None:
        return None
    if not isinstance(entry, Mapping):
        raise StreamError(f"stream header has a bad base entry: {entry!r}")
    digest, name, fast = entry.get("sha256"), entry.get("name"), entry.get("xxh3_128")
    if (
        not isinstance(digest, str)
        or len(digest) != 64
        or not (name is None or isinstance(name, str))
        or ("xxh3_128" in entry and not (isinstance(fast, str) and len(fast) == 32))
    ):
        raise StreamError(f"stream header has a bad base entry: {entry!r}")
    return dict(entry)


def describe_base(entry: Mapping[str, Any]) -> str:
    name = entry.get("name")
    return f"{name!r} (SHA-256 {entry['sha256']})" if name else f"SHA-256 {entry['sha256']}"


def check_base(
    header: Mapping[str, Any], base: Any, dtype: np.dtype, shape: tuple[int, ...]
) -> np.ndarray | None:
    """The base a stream needs, checked against what its header records: ``MismatchError``
    naming the recorded base when none is given, or one of another dtype, shape or SHA-256.
    ``None`` for a stream coded alone (a base given with it is not needed)."""
    entry = recorded_base(header)
    if entry is None:
        return None
    if base is None:
        raise MismatchError(
            f"the stream was coded against base {describe_base(entry)}; decode it with that base "
            "(base= / --base)"
        )
    ref = np.asarray(base)  # a dtype no stream has is refused by the comparison
    if ref.dtype != dtype or ref.shape != shape:
        raise MismatchError(
            f"the base given ({ref.dtype}{list(ref.shape)}) is not the stream's base "
            f"{describe_base(entry)}, which has the array's dtype and shape "
            f"({dtype}{list(shape)})"
        )
    if not ref.flags.c_contiguous:
        ref = ref.copy(order="C")
    if "xxh3_128" in entry:  # the faster of the two, where the stream records it
        key, digest, label = "xxh3_128", base_xxh3_128(ref), "XXH3-128"
    else:
        key, digest, label = "sha256", base_sha256(ref), "SHA-256"
    if digest == entry[key]:
        return ref
    raise MismatchError(
        f"the base given is not the stream's base {describe_base(entry)}: its {label} is "
        f"{digest}, the stream records {entry[key]}"
    )


PART_SLACK = 8, 1 << 20
"""A part holds at most 8x the array's bytes plus 1 MiB: stages re-code an array into indices,
masks and values (the built-in ones into at most ~3x: float16 values with uint32 gaps), never
into much more, so the array's size (which ``max_nbytes`` bounds) bounds every part too."""


_OUT_OF_MEMORY = (
    "out of memory decoding an array of {} bytes (as its header declares): a damaged header "
    "can declare more than the array was, and an intact stream may fit with fewer threads "
    "(--jobs 1)"
)


def _check_parts(specs: list[Any], dtype: np.dtype, count: int, staged: bool) -> None:
    """Every part's declared size against the array's, before any part is allocated: without
    stages the one part *is* the array, its dtype too (decoding would otherwise cast its values
    into the array's dtype: float32 gradients read as int32 zeros, every block's checksum
    right); with stages each is bounded by :data:`PART_SLACK`."""
    factor, extra = PART_SLACK
    array_nbytes = dtype.itemsize * count
    sizes, dtypes = [], []
    for spec in specs:
        try:
            dtypes.append(parse_dtype(spec["dtype"]))
            sizes.append(dtypes[-1].itemsize * nonnegative(spec["count"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StreamError(f"bad part entry in header: {exc}") from None
    if not staged and (sizes != [array_nbytes] or dtypes != [dtype]):
        raise StreamError(
            f"header declares parts of {sizes} bytes ({', '.join(map(str, dtypes))}) for an "
            f"array of {array_nbytes} bytes ({dtype})"
        )
    if sum(sizes) > factor * array_nbytes + extra:
        raise StreamError(
            f"header declares parts of {sum(sizes)} bytes for an array of {array_nbytes} bytes"
        )


_RECORDED_PIPELINES: dict[str, Pipeline] = {}
"""Pipelines built from recorded configurations, by their JSON text, most recently used last:
building one (components from the registry, the serializer's tables) is ~100 us, most of a
small tensor's decode once its kernel is fast (a checkpoint's hundreds of biases and norms)."""
MAX_RECORDED_PIPELINES = 64
registry.on_reset(_RECORDED_PIPELINES.clear)  # a new registry: pipelines built from it again


def _json_key(value: Any) -> str | None:
    """``value``'s canonical JSON text (a cache key), ``None`` when it is not JSON."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None


_KEYED = ("pipeline", "prior")
"""The header entries that :func:`stream_key` covers: a key made of their text as written
(:func:`container.read_header_keyed`, prefixed ``text``) stands in for it, in the same caches
(it determines them as exactly, and never equals a :func:`stream_key`, which is JSON)."""


def read_keyed_header(blob: bytes) -> tuple[tuple[dict[str, Any], int], str | None]:
    """:func:`container.read_header`'s result for ``blob`` and a key that stands for its
    :func:`stream_key` in the caches of built pipelines and stream checks (the text of the
    :data:`_KEYED` entries as written; ``None`` for a header not in the compact form writers
    use): a chunk's decode then writes no JSON to find its pipeline."""
    head, text_key = container.read_header_keyed(blob, _KEYED)
    return head, None if text_key is None else f"text {text_key}"


def stream_key(header: Mapping[str, Any]) -> str | None:
    """What a stream header records of its pipeline and prior, as one canonical text: the key
    of the caches of built pipelines and of :meth:`Pipeline.check_stream`'s answers (a layout
    makes it a few KB, so a decode writes it once)."""
    return _json_key([header.get("pipeline", {}), header.get("prior", {})])


def recorded_pipeline(config: dict[str, Any], key: str | None = None) -> Pipeline:
    """The pipeline a stream header records (``config``: every key present, from
    :func:`recorded_config`), built inside :func:`registry.recorded` (an option the header
    leaves out means what it always meant); a build error is the stream's (``StreamError``).

    Reused across calls when its prior is ``thread_safe`` (read-only: every call opens its own
    sessions) and it has no stages: such a pipeline holds nothing a decode changes, and no model
    a caller would expect freed. ``key``: a text that determines ``config`` (default: its own
    JSON text)."""
    key = _json_key(config) if key is None else key
    hit = _reused_pipeline(key) if key is not None else None
    if hit is not None:
        return hit
    with header_errors(), registry.recorded():
        hit = Pipeline._build(config)  # the header's text was bounded: no re-walk
    if key is None or hit.stages or not hit.prior.thread_safe:
        return hit
    drop_oldest(_RECORDED_PIPELINES, MAX_RECORDED_PIPELINES)
    _RECORDED_PIPELINES[key] = hit  # most recently used last
    return hit


def _reused_pipeline(key: str) -> Pipeline | None:
    """The pipeline cached under ``key``, made the most recently used; ``None`` when none is."""
    hit = _RECORDED_PIPELINES.pop(key, None)
    if hit is not None:
        _RECORDED_PIPELINES[key] = hit
    return hit


def decompress(
    blob: bytes,
    *,
    prior_options: Mapping[str, Any] | None = None,
    force: bool = False,
    progress: Progress | None = None,
    jobs: int | None = 1,
    max_nbytes: int | None = None,
    base: Any = None,
) -> np.ndarray:
    """Decode a stream using the pipeline recorded in its own header (``jobs`` threads decode
    independent blocks where the prior allows it; ``None``: all cores).

    ``prior_options`` override recorded prior options that may legitimately differ on this
    machine (e.g. the path of the model file); the prior's fingerprint check still applies.
    ``max_nbytes`` refuses a stream declaring a bigger array before decoding (see
    :meth:`Pipeline.decompress`). ``base``: the array a stream made with a base was coded against
    (see :meth:`Pipeline.decompress`).

    A stream the codecs or the command noted a view in (a complex, datetime, string or record
    array coded as numbers; a Fortran-ordered array coded as its transpose) comes back as that
    array: its dtype, shape and order, as the codec that wrote it gives it; a codec's
    ``time_axis`` chunk (a series of step streams) as the chunk."""
    blob = container.stream_bytes(blob)  # a buffer of other items: its bytes
    head, text_key = read_keyed_header(blob)
    header = head[0]
    declared = declared_array(header, max_nbytes)  # before a prior (perhaps a model) is built
    if stored_only(header):  # raw bytes: no prior to build (no model needed), nothing to match
        return notes.restore(header, decode_stored(blob, head, max_nbytes))
    if series.is_series(header):
        steps = partial(_decompress_step, prior_options, force, progress)
        return notes.restore(header, series.decode(steps, blob, head, jobs))
    if prior_options is not None and not isinstance(prior_options, Mapping):
        raise ConfigError(f"prior_options is a mapping, not a {type(prior_options).__name__}")
    if prior_options:
        check_size(dict(prior_options), "prior options")
    # with prior_options, it determines the config built from it
    key = stream_key(header) if text_key is None else text_key
    options = _json_key(prior_options) if prior_options else "null"
    cache = None if key is None or options is None else f"{key}\n{options}"
    pipeline = _reused_pipeline(cache) if cache is not None else None  # no config built
    if pipeline is None:
        config = {**DEFAULTS, **recorded_config(header, prior_options)}

        def alone() -> Pipeline:  # built only where a build with prior_options failed
            return recorded_pipeline({**DEFAULTS, **recorded_config(header)})

        with options_errors(prior_options, alone), header_errors(header):
            pipeline = recorded_pipeline(config, cache)
    arr = pipeline.decompress(
        blob,
        force=force,
        progress=progress,
        jobs=jobs,
        max_nbytes=max_nbytes,
        head=head,
        base=base,
        _key=key,
        _declared=declared,
    )
    return notes.restore(header, arr)


def _decompress_step(
    prior_options: Mapping[str, Any] | None,
    force: bool,
    progress: Progress | None,
    stream: bytes,
    base: np.ndarray | None,
    max_nbytes: int,
    jobs: int | None,
) -> np.ndarray:
    """One step of a series chunk (``decode_step`` of :func:`time_axis.decode`): a stream of
    its own, decoded with the pipeline it records. The chunk has no pipeline of its own, and
    :func:`decompress` refused it for that although every step says what it needs."""
    return decompress(
        stream,
        prior_options=prior_options,
        force=force,
        progress=progress,
        jobs=jobs,
        max_nbytes=max_nbytes,
        base=base,
    )


def stored_only(header: Mapping[str, Any]) -> bool:
    """Whether a stream's array is the bytes of its one stored part (no stages, no base): what
    :func:`decompress` decodes without building the recorded pipeline, and any pipeline without
    comparing its prior, so a language model's stored stream decodes on any machine, with or
    without the model and whatever its build."""
    parts, pipeline = header.get("parts"), header.get("pipeline")
    return (
        isinstance(parts, list)
        and len(parts) == 1
        and is_mapping(parts[0])
        and parts[0].get("coding") == StoredCoder.coding
        and header.get("stages") == []
        and is_mapping(pipeline)
        and pipeline.get("stages", []) == []
        and "base" not in header
    )


def decode_stored(
    blob: bytes, head: tuple[dict[str, Any], int], max_nbytes: int | None
) -> np.ndarray:
    """The array of a :func:`stored_only` stream: every block's CRC32, the part's size and the
    array's SHA-256 checked, as for any stream; the prior's fingerprint is not compared (nothing
    of it is used)."""
    header = head[0]
    dtype, shape = declared_array(header, max_nbytes)
    spec = header["parts"][0]
    _check_parts([spec], dtype, math.prod(shape), staged=False)
    expected = header.get("sha256")
    if not isinstance(expected, str):  # a value checksum needs its prior: never with stored
        raise StreamError("stream header has no sha256 for its stored part")
    box = container.unpack(blob, head)
    part = StoredCoder.read(spec, iter(box.blocks), parse_dtype(spec["dtype"]), int(spec["count"]))
    result = part.astype(dtype, copy=False).reshape(shape)
    if _sha256(result) != expected:
        raise ChecksumError("decoded data does not match the original's SHA-256: corrupted")
    return result


class _Copying:
    """The "prior" of :data:`STORED`: none is run, so any thread may decode at any time."""

    name = StoredCoder.coding
    thread_safe = True


class StoredPipeline:
    """Decodes :func:`stored_only` streams where a caller would use the pipeline their header
    records (an archive's members, ``lmgc decompress``), without building it: copying the bytes
    needs no prior, so no model is loaded and a stream of another machine or model decodes.
    Use :data:`STORED`."""

    prior = _Copying()

    def decompress(
        self,
        blob: bytes,
        force: bool = False,
        progress: Progress | None = None,
        jobs: int | None = 1,
        max_nbytes: int | None = None,
        *,
        head: tuple[dict[str, Any], int] | None = None,
        base: Any = None,
        _key: str | None = None,
    ) -> np.ndarray:
        """:meth:`Pipeline.decompress` of a stored-only stream (``StreamError`` for another)."""
        head = container.read_header(blob) if head is None else head
        if not stored_only(head[0]):
            raise StreamError("stream has a part that is not stored: it needs its pipeline")
        return decode_stored(blob, head, max_nbytes)


STORED = StoredPipeline()


def compress(
    array: Any,
    config: Mapping[str, Any] | None = None,
    *,
    base: Any = None,
    base_name: str | None = None,
    **overrides: Any,
) -> bytes:
    """One-shot helper: ``Pipeline.from_config(config, **overrides).compress(array, base=...)``."""
    return Pipeline.from_config(config, **overrides).compress(array, base=base, base_name=base_name)
