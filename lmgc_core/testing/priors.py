"""``check_prior``: the rules a prior must follow for its streams to decode, everywhere."""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from lmgc_core.coding.pipeline import Pipeline
from lmgc_core.components import registry
from lmgc_core.components.interfaces import ArrayCoding, Prior
from lmgc_core.testing._common import (
    ConformanceError,
    Subject,
    check_config,
    class_sets,
    json_copy,
    roundtrip_everywhere,
    same_bits,
    subject,
)
from lmgc_core.testing.samples import gradients, sample_arrays
from lmgc_core.testing.trace import ScoreError, score_trace


def check_prior(
    prior: Any,
    *,
    config: Mapping[str, Any] | None = None,
    small: bool = False,
    batch_independent: bool = False,
    fingerprint_covers: Mapping[str, str] | None = None,
    fresh_process: bool = True,
    cli: bool = True,
    codec: bool = True,
) -> list[str]:
    """Check a prior (a registered name, a ``{"name": ..., **options}`` spec or an instance).

    ``config``: pipeline keys to use (serializer, window, batch...; the defaults give several
    windows and batches, the last one short). ``small``: tiny inputs, for LM priors on a CPU.
    ``batch_independent``: the prior claims that a window's scores do not depend on the other
    windows of its batch (then that is checked). ``fingerprint_covers``: options that are not
    fingerprint keys themselves, mapped to the fingerprint key that stands for them (e.g.
    ``{"model": "model_sha256"}``). Returns the rules that passed; raises
    :class:`ConformanceError` naming the prior and the rule on the first that fails."""
    sub = subject("prior", prior)
    if not isinstance(sub.component, Prior):
        sub.fail("interface", f"{type(sub.component).__name__} is not a lmgc_core Prior")
    check_config(sub)
    _check_defaults(sub)
    _check_fingerprint(sub, fingerprint_covers or {})
    layout = {"window": 19, "batch": 4} if small else {"window": 32, "batch": 8}
    cfg = {"serializer": "hex", **layout, **(config or {})}
    cfg["prior"] = sub.spec
    cfg = _coding_config(sub, cfg)
    pipeline = Pipeline.from_config(json_copy(cfg))
    data = gradients(6 if small else 150)
    first_trace = _check_scores(sub, pipeline, data, batch_independent)
    if isinstance(sub.component, ArrayCoding):
        _check_array_coding(sub, data.reshape(2, -1))
    _check_estimates(sub, pipeline, data)
    fresh = roundtrip_everywhere(
        sub,
        cfg,
        sample_arrays(small),
        cli=cli,
        codec=codec,
        fresh_process=fresh_process,
        fresh_job={"trace": {"data": data.tolist()}},
        light=small,
    )
    if fresh_process:
        if fresh.get("trace") != first_trace:
            sub.fail("determinism", "a fresh process gives other scores for the same calls")
        sub.ok("same scores in a fresh process")
    return sub.passed


def _check_defaults(sub: Subject) -> None:
    cls = type(sub.component)
    for attr, low in (("default_window", 2), ("default_batch_size", 1)):
        if not class_sets(cls, attr, Prior):
            sub.fail(
                "defaults",
                f"{cls.__name__} does not set {attr} (it inherits Prior's {getattr(Prior, attr)}, "
                "a placeholder): choose it deliberately for this prior's speed and context",
            )
        value = getattr(cls, attr)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            sub.fail("defaults", f"{attr} must be an integer >= {low}, not {value!r}")
    sub.ok("default_window and default_batch_size are set")


def _check_fingerprint(sub: Subject, covers: Mapping[str, str]) -> None:
    prior = sub.component
    fp = prior.fingerprint()
    if not isinstance(fp, dict) or not fp:
        sub.fail("fingerprint", f"must be a non-empty dict, not {fp!r}")
    try:
        same = json_copy(fp) == fp
    except (TypeError, ValueError) as exc:
        sub.fail("fingerprint", f"is not JSON-serialisable: {exc}")
    if not same:
        sub.fail("fingerprint", f"does not survive JSON: {fp!r}")
    for option in prior.get_config():
        key = covers.get(option, option)
        if key not in fp:
            via = f" (nor {key!r}, which stands for it)" if option in covers else ""
            sub.fail(
                "fingerprint",
                f"option {option!r} is in get_config() but not in fingerprint(){via}: a stream "
                f"made with another {option} would be decoded with the wrong numbers instead of "
                "being refused; add it (or pass fingerprint_covers={option: key} when another "
                "fingerprint entry stands for it)",
            )
    with registry.recorded():  # as a stream header's config is rebuilt
        rebuilt = sub.rebuild(json_copy(prior.get_config()))
    if rebuilt.fingerprint() != fp:
        sub.fail(
            "config replay",
            f"rebuilt from get_config() the fingerprint is {rebuilt.fingerprint()!r}, not {fp!r}: "
            "an option is missing from get_config()",
        )
    sub.ok("fingerprint is JSON, covers every option and replays")


def _trace(sub: Subject, prior: Any, pipeline: Pipeline, data: np.ndarray, batch: int) -> Any:
    try:
        return score_trace(prior, pipeline.serializer, data, pipeline.window, batch)
    except ScoreError as exc:
        sub.fail("scores", str(exc))


def _check_scores(sub: Subject, pipeline: Pipeline, data: np.ndarray, independent: bool) -> str:
    """Validates the scores and compares traces in this process; returns the trace digest."""
    prior = pipeline.prior
    first, per_window = _trace(sub, prior, pipeline, data, pipeline.batch)
    sub.ok("scores have valid shapes and values")
    if _trace(sub, prior, pipeline, data, pipeline.batch)[0] != first:
        sub.fail("determinism", "the same calls in a second session give other scores")
    if _trace(sub, sub.rebuild(), pipeline, data, pipeline.batch)[0] != first:
        sub.fail("determinism", "a second instance gives other scores for the same calls")
    sub.ok("same calls give the same scores (sessions, instances)")
    if getattr(prior, "thread_safe", False):
        with ThreadPoolExecutor(2) as pool:
            runs = list(
                pool.map(lambda _: _trace(sub, prior, pipeline, data, pipeline.batch)[0], range(4))
            )
        if set(runs) != {first}:
            sub.fail("thread_safe", "sessions used from several threads give other scores")
        sub.ok("thread_safe: concurrent sessions give the same scores")
    if independent:
        alone = _trace(sub, prior, pipeline, data, 1)[1]
        for win, dists in per_window.items():
            if alone.get(win) != dists:
                sub.fail(
                    "batch independence",
                    f"window {win} is scored differently alone and inside a batch of "
                    f"{pipeline.batch}; pass batch_independent=False if the prior shares state "
                    "across a batch",
                )
        sub.ok("batch independence")
    return first


def _check_estimates(sub: Subject, pipeline: Pipeline, data: np.ndarray) -> None:
    """``estimate`` works both ways; ``teacher_forced_scores``, when offered, has the documented
    ``(n, L, A)`` shape."""
    ser = pipeline.serializer
    windows = ser.to_symbols(data[:4]).astype(np.int64).reshape(1, -1)
    scores = pipeline.prior.teacher_forced_scores(ser.alphabet, windows)
    if scores is not None:
        want = (*windows.shape, len(ser.alphabet))
        if not isinstance(scores, np.ndarray) or scores.shape != want or scores.dtype.kind != "f":
            got = getattr(scores, "shape", type(scores).__name__)
            sub.fail("teacher_forced_scores", f"must return {want} floats or None, not {got}")
    for teacher_forced in (False, True):
        bits = pipeline.estimate(data, teacher_forced=teacher_forced)["ideal_bits"]
        if not np.isfinite(bits) or bits < 0:
            sub.fail("estimate", f"ideal_bits is {bits} (teacher_forced={teacher_forced})")
    sub.ok("estimate (step loop and teacher-forced)")


def _check_array_coding(sub: Subject, data: np.ndarray) -> None:
    """The fast path must not depend on ``jobs`` (it is not recorded) and must round-trip."""
    prior = sub.component
    meta, blocks = prior.encode_array(data, data.shape, jobs=1)
    meta2, blocks2 = prior.encode_array(data, data.shape, jobs=2)
    if json.dumps(meta, sort_keys=True) != json.dumps(meta2, sort_keys=True) or list(
        map(bytes, blocks)
    ) != list(map(bytes, blocks2)):
        sub.fail("ArrayCoding", "encode_array gives other output with jobs=2 than with jobs=1")
    if json_copy(meta) != meta:
        sub.fail("ArrayCoding", f"meta does not survive JSON: {meta!r}")
    for jobs in (1, 2):
        back = prior.decode_array(json_copy(meta), blocks, data.dtype, data.shape, jobs=jobs)
        if not same_bits(np.asarray(back).reshape(data.shape), data):
            sub.fail("ArrayCoding", f"decode_array(jobs={jobs}) is not bit-exact")
    sub.ok("ArrayCoding: jobs-independent and exact")


__all__ = ["ConformanceError", "check_prior"]


def _coding_config(sub: Subject, cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` without a window and batch for a prior that codes whole arrays: ``lmgc compress``
    refuses them there as doing nothing (its step checks then run on the default window)."""
    if not isinstance(sub.component, ArrayCoding):
        return cfg
    return {k: v for k, v in cfg.items() if k not in ("window", "batch")}
