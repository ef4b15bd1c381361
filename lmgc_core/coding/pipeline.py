"""``Pipeline``: a configured chain of stages, serializer, prior and coder.

The configuration is a plain JSON-able dict (``get_config``/``from_config``, as in numcodecs) and
travels inside every stream, so ``decompress(blob)`` needs nothing but the stream.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from lmgc_core.coding import provenance
from lmgc_core.coding.config_file import check_size
from lmgc_core.coding.engine import (
    BitCounter,
    Layout,
    decoding_chooser,
    drive,
    encoding_chooser,
    unwindow,
    window_matrix,
)
from lmgc_core.coding.options import valid_options
from lmgc_core.coding.probability import distributions, ideal_bits
from lmgc_core.components import registry
from lmgc_core.components.interfaces import ArrayCoding, EntropyCoder, Prior, Serializer, Stage
from lmgc_core.stream import container
from lmgc_core.util.dtypes import dtype_name, parse_dtype
from lmgc_core.util.errors import ChecksumError, ConfigError, LMGCError, MismatchError, StreamError
from lmgc_core.util.parallel import in_background, map_ordered, resolve_jobs

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
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise ConfigError(f"{kind} must be a name or a mapping with a 'name', not {spec!r}")
    options = {k: v for k, v in spec.items() if k != "name"}
    return registry.build(kind, spec["name"], options)


def _prior_at_level(spec: Any, level: Any) -> Any:
    """The prior built from ``spec`` with ``level`` merged into its options; a clear error for a
    prior that has no levels (instead of a bare "unexpected keyword")."""
    if level is None:
        return _component("prior", spec)
    if isinstance(spec, str):
        spec = {"name": spec}
    name = spec.get("name") if isinstance(spec, Mapping) else None
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
    except ConfigError as exc:
        text = str(exc)  # the factory's own TypeError, rejecting the one option added
        if "argument 'level'" in text or ("takes no arguments" in text and len(spec) == 1):
            raise none from None
        raise
    if getattr(prior, "level", None) != level:  # a factory that swallowed the option
        raise none
    return prior


def _spec(component: Any) -> dict[str, Any]:
    return {"name": component.name, **component.get_config()}


def _sha256(array: np.ndarray) -> str:
    """Hash of the exact bytes, shape included (so a reshaped result cannot pass)."""
    h = hashlib.sha256(repr(tuple(array.shape)).encode())
    h.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    return h.hexdigest()


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
        if not isinstance(window, int) or isinstance(window, bool) or window < 2:
            raise ConfigError(f"window must be an integer >= 2 tokens, not {window!r}")
        if window < serializer.period + 1:  # a smaller one would overflow every window
            raise ConfigError(
                f"window {window} is too small: it must hold the BOS token and one serializer "
                f"period ({serializer.period} symbols), so at least {serializer.period + 1}"
            )
        if batch is not None and (
            not isinstance(batch, int) or isinstance(batch, bool) or batch < 1
        ):
            raise ConfigError(f"batch must be a positive integer or null, not {batch!r}")
        self.serializer = serializer
        self.prior = prior
        self.coder = coder
        self.stages = list(stages)
        self.window = window
        self.batch = batch or prior.default_batch_size

    # -- configuration -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None = None, **overrides: Any) -> Pipeline:
        cfg = {**DEFAULTS, **(config or {}), **overrides}
        # a dict from anywhere (Zarr metadata someone else wrote, a stream header) meets the
        # caps a config file meets, before any component is built
        check_size(cfg, "pipeline configuration")
        unknown = set(cfg) - set(DEFAULTS)
        if unknown:
            raise ConfigError(
                f"unknown pipeline keys {sorted(unknown)}; valid keys: {sorted(DEFAULTS)}"
            )
        if not isinstance(cfg["stages"], list | tuple):
            raise ConfigError("stages must be a list")
        return cls(
            serializer=_component("serializer", cfg["serializer"]),
            prior=_prior_at_level(cfg["prior"], cfg["level"]),
            coder=_component("coder", cfg["coder"]),
            stages=[_component("stage", s) for s in cfg["stages"]],
            window=cfg["window"],
            batch=cfg["batch"],
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "stages": [_spec(s) for s in self.stages],
            "serializer": _spec(self.serializer),
            "prior": _spec(self.prior),
            "coder": _spec(self.coder),
            "window": self.window,
            "batch": self.batch,
        }

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

    def reconstruct(self, array: Any) -> np.ndarray:
        """What decoding returns for ``array``: the stages' own reconstruction (exact copy when
        every stage is lossless)."""
        arr = _as_array(array)
        parts, states = self._forward(arr)
        return self._inverse(parts, states, arr.dtype, arr.shape)

    # -- coding ----------------------------------------------------------------------------------
    def _layout(self, n_symbols: int) -> Layout:
        return Layout(n_symbols, self.serializer.period, self.window, self.batch)

    def _drive(self, lengths: np.ndarray, choose: Any, prior: Prior | None = None) -> np.ndarray:
        """One batch: as many rows as it has windows (only the last batch can have fewer)."""
        s = self.serializer
        return drive(
            prior or self.prior,
            s.alphabet,
            s.pattern,
            s.free_symbols,
            lengths,
            len(lengths),
            self.window,
            choose,
        )

    def _encode_batch(
        self, symbols: np.ndarray, wins: list[tuple[int, int]], progress: Progress | None
    ) -> bytes:
        """One batch -> one independent block (own prior session, own coder)."""
        mat = window_matrix(symbols, wins)
        enc = self.coder.encoder()
        lengths = np.array([n for _, n in wins])
        self._drive(lengths, encoding_chooser(mat, self.serializer.free_symbols, enc))
        block = enc.finish()
        if progress:
            progress(int(lengths.sum()))
        return block

    def compress(self, array: Any, progress: Progress | None = None, jobs: int | None = 1) -> bytes:
        """Code ``array``; ``jobs`` threads code independent blocks (``None``: all cores) where
        the prior allows it. The bytes do not depend on ``jobs``."""
        provenance.check_replay(self)
        jobs = resolve_jobs(jobs) if self.prior.thread_safe else 1
        arr = _as_array(array)
        parts, states = self._forward(arr)
        if self.stages:
            expected = self._inverse(
                {k: v.copy() for k, v in parts.items()}, states, arr.dtype, arr.shape
            )
        else:
            expected = arr
        value_checksum = self._value_checksum(self.prior)
        # With spare cores the checksum runs beside the coding (hashlib releases the GIL), so it
        # is not a serial step in front of a parallel one.
        checksum = None if value_checksum else in_background(partial(_sha256, expected), jobs)
        part_headers, blocks = [], []
        for name, data in parts.items():
            data = np.ascontiguousarray(data).reshape(-1)
            if isinstance(self.prior, ArrayCoding):
                shape = arr.shape if data.size == arr.size and arr.ndim else (data.size,)
                meta, coded = self.prior.encode_array(data, tuple(shape), jobs)
                blocks.extend(coded)
                part_headers.append(
                    {
                        "name": name,
                        "dtype": dtype_name(data.dtype),
                        "count": int(data.size),
                        "coding": "array",
                        "array": meta,
                        "blocks": [[len(b), zlib.crc32(b)] for b in coded],
                    }
                )
                if progress:
                    progress(self.serializer.n_symbols(data.nbytes))
                continue
            symbols = self.serializer.to_symbols(data)
            layout = self._layout(symbols.size)
            part_blocks = map_ordered(
                partial(self._encode_batch, symbols, progress=progress), layout.batches(), jobs
            )
            entries = [[len(block), zlib.crc32(block)] for block in part_blocks]
            blocks.extend(part_blocks)
            part_headers.append(
                {
                    "name": name,
                    "dtype": dtype_name(data.dtype),
                    "count": int(data.size),
                    "n_symbols": int(symbols.size),
                    "blocks": entries,
                }
            )
        header = {
            "pipeline": self.get_config(),
            "prior": self.prior.fingerprint(),
            "made_by": provenance.made_by(self),
            "array": {"dtype": dtype_name(arr.dtype), "shape": list(arr.shape)},
            **({"checksum": value_checksum} if checksum is None else {"sha256": checksum()}),
            "stages": states,
            "parts": part_headers,
        }
        blob = container.pack(header, blocks)
        alternative = self._fallback_pipeline()
        if alternative is not None:
            other = alternative.compress(arr, jobs=jobs)
            if len(other) <= len(blob):
                return other
        return blob

    def _value_checksum(self, prior: Prior) -> str | None:
        """The name of the checksum ``prior`` records and verifies in every block of the values
        it codes (``value_checksum``), when that covers the whole array: no stages, so the one
        part *is* the array. Such a stream carries no SHA-256; else ``None``."""
        name = getattr(prior, "value_checksum", None)
        ok = not self.stages and isinstance(prior, ArrayCoding) and isinstance(name, str)
        return name if ok else None

    def _fallback_pipeline(self) -> Pipeline | None:
        """The pipeline of the prior's fallback (see :meth:`Prior.fallback`): same serializer,
        coder and stages, the fallback's own window and batch, exactly as if configured alone."""
        fallback = self.prior.fallback()
        if fallback is None:
            return None
        return Pipeline(self.serializer, fallback, self.coder, self.stages)

    def _made_by_fallback(self, header: Mapping[str, Any]) -> Pipeline | None:
        recorded = header.get("pipeline")
        spec = recorded.get("prior") if isinstance(recorded, Mapping) else None
        name = spec.get("name") if isinstance(spec, Mapping) else spec
        if name == self.prior.name:
            return None
        alternative = self._fallback_pipeline()
        return alternative if alternative is not None and name == alternative.prior.name else None

    def check_stream(self, header: Mapping[str, Any]) -> Prior:
        """Refuse a stream whose layout or prior differs from this pipeline's; returns the prior
        that decodes it (see :meth:`Prior.for_stream`)."""
        recorded = header.get("pipeline", {})
        if not isinstance(recorded, Mapping):
            raise StreamError("stream header has a bad pipeline configuration")
        mine = self.get_config()
        diffs = [
            f"{key}: stream has {recorded.get(key)!r}, this pipeline has {mine[key]!r}"
            for key in sorted(mine)
            if key != "prior" and recorded.get(key) != mine[key]
        ]
        prior_spec = recorded.get("prior")
        prior_name = prior_spec.get("name") if isinstance(prior_spec, Mapping) else prior_spec
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

    @provenance.explain_decode_failures
    def decompress(
        self,
        blob: bytes,
        force: bool = False,
        progress: Progress | None = None,
        jobs: int | None = 1,
        max_nbytes: int | None = None,
        *,
        head: tuple[dict[str, Any], int] | None = None,
    ) -> np.ndarray:
        """Decode ``blob``. ``max_nbytes``: refuse (:class:`StreamError`, before anything is
        allocated or decoded) a stream whose header declares a bigger array: a few bytes of
        stream may legitimately stand for gigabytes of zeros, so only the caller knows how much
        it is ready to receive (a ``out=`` buffer, a chunk, a manifest entry). ``head``:
        :func:`container.read_header`'s result for ``blob`` when the caller has it (a header is
        then verified and parsed once, which counts for small chunks)."""
        head = container.read_header(blob) if head is None else head
        header = head[0]
        alternative = self._made_by_fallback(header)
        if alternative is not None:  # the fallback's stream was the smaller one
            return alternative.decompress(
                blob, force=force, progress=progress, jobs=jobs, max_nbytes=max_nbytes, head=head
            )
        dtype, shape = declared_array(header, max_nbytes)
        try:
            states = list(header["stages"])
            part_specs = list(header["parts"])
            checksum = header.get("checksum")
            expected_hash = None if checksum is not None else str(header["sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StreamError(f"header is missing or has a bad field: {exc}") from None
        if len(states) != len(self.stages):
            raise StreamError("header stage states do not match its stage list")
        _check_parts(part_specs, dtype.itemsize * math.prod(shape), bool(self.stages))
        box = container.unpack(blob, head)
        prior = self.prior if force else self.check_stream(header)
        # only a prior that verifies every block of the one part may stand in for SHA-256
        if checksum is not None and (
            checksum != self._value_checksum(prior)
            or any(not isinstance(p, Mapping) or p.get("coding") != "array" for p in part_specs)
        ):
            raise StreamError(
                f"stream header names checksum {checksum!r}, which this pipeline and prior "
                f"({prior.name}) do not verify"
            )
        jobs = resolve_jobs(jobs) if prior.thread_safe else 1
        blocks = iter(box.blocks)
        parts: dict[str, np.ndarray] = {}
        try:
            for spec in part_specs:
                parts[spec["name"]] = self._decode_part(spec, blocks, progress, prior, jobs)
        except MemoryError:
            raise StreamError("the header asks for more memory than this machine has") from None
        except (TypeError, KeyError) as exc:
            raise StreamError(f"bad part entry in header: {exc}") from None
        try:
            result = self._inverse(parts, states, dtype, shape)
        except LMGCError:
            raise
        except MemoryError:  # a stage state declaring a huge part (sparsify's n, say)
            raise StreamError("the header asks for more memory than this machine has") from None
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise ChecksumError(f"decoded data does not rebuild the array: {exc}") from None
        if expected_hash is not None and _sha256(result) != expected_hash:
            raise ChecksumError(
                "decoded data does not match the original's SHA-256: the stream was made with a "
                "different prior or is corrupted"
            )
        return result

    def _decode_part(
        self,
        spec: Mapping[str, Any],
        blocks: Any,
        progress: Progress | None,
        prior: Prior,
        jobs: int,
    ) -> np.ndarray:
        try:
            dtype = parse_dtype(spec["dtype"])
            count = int(spec["count"])
            n_blocks = len(spec["blocks"])
            coding = spec.get("coding", "steps")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StreamError(f"bad part entry in header: {exc}") from None
        if count < 0:
            raise StreamError("negative part length in header")
        if coding == "array":
            if not isinstance(prior, ArrayCoding):
                raise StreamError(
                    f"part {spec.get('name')!r} was coded as a whole array, which prior "
                    f"{prior.name!r} cannot decode"
                )
            data = [next(blocks) for _ in range(n_blocks)]
            try:
                result = prior.decode_array(spec.get("array") or {}, data, dtype, (count,), jobs)
            except ConfigError as exc:  # the header's own options cannot lay the part out
                raise StreamError(f"part {spec.get('name')!r}: {exc}") from None
            if progress:
                progress(self.serializer.n_symbols(count * dtype.itemsize))
            return result
        if coding != "steps":
            raise StreamError(f"unknown part coding {coding!r} in header")
        try:
            n_symbols = int(spec["n_symbols"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StreamError(f"bad part entry in header: {exc}") from None
        if n_symbols != self.serializer.n_symbols(count * dtype.itemsize):
            raise StreamError("part length in header does not match its serialization")
        layout = self._layout(n_symbols)
        needed = layout.n_batches()  # counted before the windows are listed
        if needed != n_blocks:
            raise StreamError(f"header lists {n_blocks} blocks, the layout needs {needed}")
        batches = list(layout.batches())
        symbols = np.zeros(n_symbols, dtype=np.uint16)

        def decode_batch(item: tuple[list[tuple[int, int]], bytes]) -> None:
            wins, block = item  # batches write disjoint slices of ``symbols``
            lengths = np.array([n for _, n in wins])
            mat = self._drive(lengths, decoding_chooser(self.coder.decoder(block)), prior)
            unwindow(mat, wins, symbols)
            if progress:
                progress(int(lengths.sum()))

        part_blocks = [next(blocks) for _ in batches]
        map_ordered(decode_batch, zip(batches, part_blocks, strict=True), jobs)
        return self.serializer.from_symbols(symbols, dtype, count)

    # -- estimate --------------------------------------------------------------------------------
    def estimate(self, array: Any, teacher_forced: bool = False) -> dict[str, Any]:
        """Ideal code length (sum of -log2 p) without producing a stream.

        The default walks the same step loop as coding; ``teacher_forced=True`` uses the prior's
        one-pass-per-window fast path when it has one (the paper's measurement)."""
        arr = _as_array(array)
        parts, _ = self._forward(arr)
        bits, n_free, method = 0.0, 0, "step"
        s = self.serializer
        for data in parts.values():
            if isinstance(self.prior, ArrayCoding):  # coding is fast: the real size is the estimate
                method = "coded"
                data = np.ascontiguousarray(data).reshape(-1)
                shape = arr.shape if data.size == arr.size and arr.ndim else (data.size,)
                _, coded = self.prior.encode_array(data, tuple(shape))
                bits += 8.0 * sum(len(b) for b in coded)
                n_free += s.n_symbols(data.nbytes) * len(s.free_symbols) // max(s.period, 1)
                continue
            symbols = s.to_symbols(np.ascontiguousarray(data).reshape(-1))
            layout = self._layout(symbols.size)
            for wins in layout.batches():
                mat = window_matrix(symbols, wins)
                lengths = np.array([n for _, n in wins])
                scores = (
                    self.prior.teacher_forced_scores(s.alphabet, mat.T) if teacher_forced else None
                )
                free_mask = np.asarray(s.pattern)[np.arange(mat.shape[0]) % s.period] < 0
                n_free += int(sum(free_mask[:n].sum() for n in lengths))
                if scores is None:
                    counter = BitCounter(mat, s.free_symbols)
                    self._drive(lengths, counter)
                    bits += counter.bits
                else:
                    method = "teacher-forced"
                    bits += _teacher_forced_bits(scores, mat, lengths, free_mask, s.free_symbols)
        return {
            "method": method,
            "ideal_bits": bits,
            "ideal_bytes": bits / 8,
            "original_bytes": int(arr.nbytes),
            "free_symbols": n_free,
            "bits_per_symbol": bits / n_free if n_free else 0.0,
            "rate_percent": 100 * bits / 8 / arr.nbytes if arr.nbytes else 0.0,
        }


def _teacher_forced_bits(
    scores: np.ndarray,
    mat: np.ndarray,
    lengths: np.ndarray,
    free_mask: np.ndarray,
    free: Sequence[int],
) -> float:
    """``scores`` is ``(rows, len, A)``; ``mat`` the position-major symbol matrix."""
    lookup = np.full(max(free) + 1, -1, dtype=np.int64)
    lookup[np.asarray(free)] = np.arange(len(free))
    bits = 0.0
    for row, n in enumerate(lengths):
        cols = np.flatnonzero(free_mask[:n])
        probs = distributions(scores[row, cols], np.asarray(free))
        bits += ideal_bits(probs, lookup[mat[cols, row]])
    return bits


def _as_array(array: Any) -> np.ndarray:
    arr = np.asarray(array)
    dtype_name(arr.dtype)  # raises ConfigError for unsupported dtypes
    return arr if arr.flags.c_contiguous else arr.copy(order="C")  # keeps 0-d arrays 0-d


def read_header(blob: bytes) -> dict[str, Any]:
    """The verified JSON header of a stream (no decoding)."""
    return container.read_header(blob)[0]


MAX_ARRAY_NBYTES = 1 << 56
"""No declared array is bigger (sizes past it would overflow numpy's index arithmetic)."""
PART_SLACK = 8, 1 << 20
"""A part holds at most 8x the array's bytes plus 1 MiB: stages re-code an array into indices,
masks and values (the built-in ones into at most ~3x: float16 values with uint32 gaps), never
into much more, so the array's size (which ``max_nbytes`` bounds) bounds every part too."""


def declared_array(
    header: Mapping[str, Any], max_nbytes: int | None = None
) -> tuple[np.dtype, tuple[int, ...]]:
    """The ``(dtype, shape)`` a stream's header declares, checked for sane sizes and, with
    ``max_nbytes``, refused (:class:`StreamError` naming both sizes) when bigger: what callers
    compare with the buffer, chunk or manifest entry they expect, before decoding anything."""
    try:
        dtype = parse_dtype(header["array"]["dtype"])
        shape = tuple(_count(n) for n in header["array"]["shape"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StreamError(f"header has a bad array entry: {exc}") from None
    if len(shape) > 64:
        raise StreamError(f"header declares a {len(shape)}-dimensional array")
    nbytes = dtype.itemsize * math.prod(shape)
    if nbytes > MAX_ARRAY_NBYTES:
        raise StreamError(f"header declares an implausible array of {nbytes} bytes")
    if max_nbytes is not None and nbytes > max_nbytes:
        raise StreamError(
            f"stream declares {dtype}{list(shape)} ({nbytes} bytes), more than the "
            f"{max_nbytes} bytes expected"
        )
    return dtype, shape


def _count(value: Any) -> int:
    """A non-negative integer from a header (never a float, bool or string that parses)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a non-negative integer")
    return value


def _check_parts(specs: list[Any], array_nbytes: int, staged: bool) -> None:
    """Every part's declared size against the array's, before any part is allocated: without
    stages the one part *is* the array; with stages each is bounded by :data:`PART_SLACK`."""
    factor, extra = PART_SLACK
    sizes = []
    for spec in specs:
        try:
            sizes.append(parse_dtype(spec["dtype"]).itemsize * _count(spec["count"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StreamError(f"bad part entry in header: {exc}") from None
    if not staged and sizes != [array_nbytes]:
        raise StreamError(
            f"header declares parts of {sizes} bytes for an array of {array_nbytes} bytes"
        )
    if sum(sizes) > factor * array_nbytes + extra:
        raise StreamError(
            f"header declares parts of {sum(sizes)} bytes for an array of {array_nbytes} bytes"
        )


def decompress(
    blob: bytes,
    *,
    prior_options: Mapping[str, Any] | None = None,
    force: bool = False,
    progress: Progress | None = None,
    jobs: int | None = 1,
    max_nbytes: int | None = None,
) -> np.ndarray:
    """Decode a stream using the pipeline recorded in its own header (``jobs`` threads decode
    independent blocks where the prior allows it; ``None``: all cores).

    ``prior_options`` override recorded prior options that may legitimately differ on this
    machine (e.g. the path of the model file); the prior's fingerprint check still applies.
    ``max_nbytes`` refuses a stream declaring a bigger array before decoding (see
    :meth:`Pipeline.decompress`)."""
    head = container.read_header(blob)
    header = head[0]
    declared_array(header, max_nbytes)  # before a prior (perhaps a model) is built
    config = header.get("pipeline")
    if not isinstance(config, dict):
        raise StreamError("stream header has no pipeline configuration")
    config = dict(config)
    if prior_options:
        config["prior"] = {**config["prior"], **prior_options}
    try:
        pipeline = Pipeline.from_config(config)
    except ConfigError as exc:
        raise StreamError(f"stream header has an invalid pipeline: {exc}") from None
    return pipeline.decompress(
        blob, force=force, progress=progress, jobs=jobs, max_nbytes=max_nbytes, head=head
    )


def compress(array: Any, config: Mapping[str, Any] | None = None, **overrides: Any) -> bytes:
    """One-shot helper: ``Pipeline.from_config(config, **overrides).compress(array)``."""
    return Pipeline.from_config(config, **overrides).compress(array)
