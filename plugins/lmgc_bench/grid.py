"""``lmgc bench``: expand a YAML grid into cells, run them (cached, resumable), aggregate.

A config names *workloads* (gradient vectors: every snapshot of an architecture in a
``lmgc collect`` store, or the rows of a ``.npy`` file) and *experiments*. An experiment is a
cartesian product::

    workload x snapshot x stage-list x ( baseline codec x chunking  |  lmgc serializer x prior
                                                                        x window x batch )

Each cell measures one codec on one byte buffer, decodes it and checks it bit for bit, and is
appended to ``cells.jsonl`` under a hash of everything that determines it (including a hash of the
input bytes), so an interrupted run resumes where it stopped. Cells that fail (a codec that
raises or does not reproduce its input) are kept, flagged ``ok: false`` and left out of every
table and plot. Aggregates are mean ± std over the snapshots of a workload.

See docs/bench.md for the config format.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lmgc_core.components.spec import ComponentSpec, spec_dict

from .baselines import DEFAULT_BASELINES, make_codec, measure, missing_modules

MEASURES = ("code", "estimate", "teacher-forced")
"""An lmgc cell's ``measure``: a real stream, or the ideal code length (``Pipeline.estimate``)
by the step loop or teacher-forced."""

CELL_VERSION = 1
"""Bump to invalidate cached cells when the measurement itself changes."""

DEFAULT_LMGC = {
    "serializer": [{"name": "hex", "bytes_per_group": 4, "separator": " "}],
    "prior": [{"name": "adaptive"}],
    "coder": {"name": "range"},
    "window": [2048],
    "batch": [None],
    "measure": "code",
}


# ---------------------------------------------------------------------------------------------
# configuration


def packaged_config(name: str) -> Path:
    """Path of a config shipped in ``lmgc_bench/configs``."""
    return Path(str(resources.files("lmgc_bench").joinpath("configs", name)))


def resolve_config_path(path: str | Path) -> Path:
    """A path as given, else the same file name among the packaged configs."""
    p = Path(path)
    if p.exists():
        return p
    shipped = packaged_config(p.name)
    if shipped.exists():
        return shipped
    raise FileNotFoundError(f"no config {path} (nor a packaged config of that name)")


def load_config(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A bench config; ``ValueError`` (one line) for any file that is not one: not YAML, not
    a mapping, ``extends:`` in a loop, experiments without names."""
    import yaml

    real = resolve_config_path(path)
    if real.resolve() in _seen:
        raise ValueError(f"{path}: 'extends' comes back to it (a loop)")
    try:
        with open(real) as fh:
            cfg = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a bench config is a mapping with a list of 'experiments'")
    if cfg.get("extends"):
        # another config's settings and experiments; an experiment of this config replaces the
        # parent's experiment of the same name, the others are appended
        parent = Path(str(cfg.pop("extends")))
        base = load_config(
            parent if parent.is_absolute() else real.parent / parent, (*_seen, real.resolve())
        )
        mine = {e["name"]: e for e in _experiments(cfg.pop("experiments", []), path)}
        merged = [mine.pop(e["name"], e) for e in base["experiments"]]
        cfg = {**base, **cfg, "experiments": [*merged, *mine.values()]}
    if "experiments" not in cfg:
        raise ValueError(f"{path}: a bench config needs a list of 'experiments'")
    _known(cfg, CONFIG_KEYS, f"{path}")
    for entry in cfg.get("workloads") or []:
        if isinstance(entry, dict):
            _known(entry, WORKLOAD_KEYS, f"{path}: workload {entry.get('name', '')!r}")
    for exp in _experiments(cfg["experiments"], path):
        _known(exp, EXPERIMENT_KEYS, f"{path}: experiment {exp['name']!r}")
    return cfg


CONFIG_KEYS = ("title", "output", "zarr", "workloads", "experiments")
WORKLOAD_KEYS = ("npy", "zarr", "arch", "name", "snapshots", "layout")
EXPERIMENT_KEYS = (
    "name", "description", "workloads", "max_snapshots", "max_floats", "slice", "stages",
    "baselines", "chunk", "lmgc", "plot",
)  # fmt: skip
"""The keys docs/bench.md documents: another (a misspelt ``max_snapshot``) is refused, as a
pipeline config refuses one, rather than dropped and the grid run at full size."""


def _known(mapping: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    if unknown := sorted(map(str, set(mapping) - set(keys))):
        raise ValueError(f"{where}: unknown key {', '.join(unknown)}; known: {', '.join(keys)}")


def _experiments(experiments: Any, path: str | Path) -> list[dict[str, Any]]:
    if not isinstance(experiments, list) or not all(
        isinstance(e, dict) and isinstance(e.get("name"), str) for e in experiments
    ):
        raise ValueError(f"{path}: 'experiments' must be a list of mappings with a 'name'")
    return experiments


def _as_list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list | tuple) else [v]


def _spec(value: Any, what: str, experiment: str) -> dict[str, Any]:
    """A component of an experiment as ``{"name": ..., **options}``; a malformed one is a
    ValueError naming the experiment (it failed deep in the grid as ``'int' object has no
    attribute 'items'``)."""
    try:
        return ComponentSpec.parse(value, what).to_dict()
    except ValueError as exc:
        raise ValueError(f"experiment {experiment!r}: {exc}") from None


def _names(value: Any, what: str, experiment: str) -> list[Any]:
    """A list an experiment gives (``workloads``, ``baselines``, ``stages``), or a ValueError."""
    if not isinstance(value, list):
        raise ValueError(f"experiment {experiment!r}: {what} must be a list, not {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# workloads


@dataclass
class Workload:
    """Named gradient vectors, one per snapshot."""

    name: str
    source: str
    snapshots: list[int]
    load: Callable[[int], np.ndarray] = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict)


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _whole(value: Any) -> int | None:
    """``value`` as an int where it is a whole number (``3``, ``3.0``; not ``True``), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if float(value).is_integer() else None


def _pick(n: int, spec: Any) -> list[int]:
    """The snapshots ``spec`` picks of ``n``: all, a count spread evenly, or listed indices
    (negative ones count from the end, as in Python)."""
    if spec is None or spec == "all":
        return list(range(n))
    count = _whole(spec)
    if count is not None and count >= 1:
        k = min(count, n)
        return sorted({round(i) for i in np.linspace(0, n - 1, k)}) if k > 1 else [n - 1]
    indices = [_whole(i) for i in spec] if isinstance(spec, list | tuple) else [None]
    if None not in indices:
        return [i % n for i in indices if -n <= i < n]  # type: ignore[operator]
    raise ValueError(
        f"snapshots must be 'all', a positive count or a list of indices, not {spec!r}"
    )


def _layout(meta: dict[str, Any]) -> list[list[int]] | None:
    """The parameter shapes ``lmgc collect`` stored with the snapshots (their layer layout)."""
    params = meta.get("params")
    return [list(p["shape"]) for p in params] if params else None


def _with_layout(spec: dict[str, Any], w: Workload, max_floats: Any) -> dict[str, Any]:
    """Hand a workload's layout to a prior that takes one (``float``), unless the cell slices
    the vector (a slice no longer has the layout's shape) or the config set one itself."""
    prior = spec.get("prior", {})
    layout = w.meta.get("layout")
    if prior.get("name") != "float" or "layout" in prior or not layout or max_floats:
        return spec
    return {**spec, "prior": {**prior, "layout": layout}}


def build_workloads(cfg: dict[str, Any], zarr_path: str | None = None) -> list[Workload]:
    out: list[Workload] = []
    zpath = zarr_path or cfg.get("zarr") or "bench-out/grads.zarr"
    entries = cfg.get("workloads", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"'workloads' must be a list of mappings, not {entries!r}")
    for entry in entries:
        entry = dict(entry)
        if "npy" in entry:
            path = str(entry["npy"])
            arr = np.load(path, mmap_mode="r")
            arr = arr.reshape(1, -1) if arr.ndim == 1 else arr.reshape(arr.shape[0], -1)
            name = entry.get("name", Path(path).stem)
            out.append(
                Workload(
                    name, f"npy:{path}", _pick(arr.shape[0], entry.get("snapshots")),
                    lambda i, a=arr: np.asarray(a[i], dtype=np.float32),
                    {"n_params": int(arr.shape[1]), "layout": entry.get("layout")},
                )
            )  # fmt: skip
        elif "zarr" in entry or "arch" in entry:
            from .collect import list_store, load_snapshots

            path = str(entry.get("zarr") or zpath)
            if not Path(path).exists():
                raise FileNotFoundError(
                    f"gradient store {path} not found: run `lmgc collect --out {path}` first"
                )
            store = list_store(path)
            archs = entry.get("arch", "all")
            archs = sorted(store) if archs == "all" else _as_list(archs)
            for arch in archs:
                if arch not in store:
                    raise ValueError(f"{path} has no architecture {arch!r} ({sorted(store)})")
                grads, meta = load_snapshots(path, arch)
                out.append(
                    Workload(
                        entry.get("name", arch) if len(archs) == 1 else arch,
                        f"zarr:{path}/{arch}", _pick(grads.shape[0], entry.get("snapshots")),
                        lambda i, g=grads: g[i], {"n_params": meta["n_params"],
                                                  "steps": meta["steps"],
                                                  "layout": _layout(meta)},
                    )
                )  # fmt: skip
        else:
            raise ValueError(f"workload entry needs 'npy' or 'arch'/'zarr': {entry}")
    if not out:
        raise ValueError("the config defines no workloads")
    return out


def take_slice(x: np.ndarray, max_floats: int | None, where: str = "middle") -> np.ndarray:
    """A contiguous slice of at most ``max_floats`` values (``start``, ``middle`` or ``end``)."""
    if not max_floats or x.size <= max_floats:
        return x
    start = {"start": 0, "middle": (x.size - max_floats) // 2, "end": x.size - max_floats}[where]
    return x[start : start + max_floats]


# ---------------------------------------------------------------------------------------------
# cells


def stage_label(stages: list[dict[str, Any]]) -> str:
    if not stages:
        return "none"
    out = []
    for s in stages:
        opts = ",".join(f"{v}" for k, v in s.items() if k != "name")
        out.append(f"{s['name']}{opts}" if opts else s["name"])
    return "+".join(out)


def serializer_label(s: dict[str, Any]) -> str:
    if s.get("name") != "hex":
        opts = ",".join(f"{k}={v}" for k, v in s.items() if k != "name")
        return f"{s['name']}({opts})" if opts else s["name"]
    g = s.get("bytes_per_group", 4)
    sep = s.get("separator", " ")
    pre = s.get("prefix", "")
    extra = ",".join(
        f"{k}={v}"
        for k, v in s.items()
        if k not in ("name", "bytes_per_group", "separator", "prefix")
    )
    label = f"hex g{g} sep{json.dumps(sep)}" + (f" {pre}" if pre else "")
    return label + (f" {extra}" if extra else "")


def prior_label(p: dict[str, Any]) -> str:
    opts = ",".join(f"{k}={v}" for k, v in p.items() if k != "name")
    return f"{p['name']}({opts})" if opts else p["name"]


@dataclass
class Cell:
    experiment: str
    workload: str
    snapshot: int
    kind: str  # "baseline" | "lmgc"
    spec: dict[str, Any]
    stages: list[dict[str, Any]]
    max_floats: int | None
    where: str
    label: str = ""
    key: str = ""


def expand(cfg: dict[str, Any], workloads: list[Workload]) -> Iterator[Cell]:
    by_name = {w.name: w for w in workloads}
    names = [exp.get("name") for exp in cfg["experiments"]]
    if twice := sorted({n for n in names if names.count(n) > 1}, key=str):
        raise ValueError(f"experiment name {twice[0]!r} is used twice: their rows would merge")
    for n in names:  # it names the plot files: '../../x' wrote outside the output folder
        if not isinstance(n, str) or not n or n.startswith(".") or "/" in n or "\\" in n:
            raise ValueError(
                f"experiment name {n!r} must be a non-empty name without / or \\ that does "
                "not start with '.' (it names the plot files)"
            )
    for exp in cfg["experiments"]:
        name = exp["name"]
        wl_names = _names(exp.get("workloads") or list(by_name), "workloads", name)
        stage_lists = [
            [_spec(st, "a stage", name) for st in _names(s or [], "each list of stages", name)]
            for s in _names(exp.get("stages", [[]]), "stages", name)
        ]
        if exp.get("max_snapshots") is not None and not _positive(exp["max_snapshots"]):
            raise ValueError(f"experiment {name!r}: max_snapshots must be a positive integer")
        max_floats = exp.get("max_floats")
        if max_floats is not None and not _positive(max_floats):
            raise ValueError(f"experiment {name!r}: max_floats must be a positive integer")
        where = exp.get("slice", "middle")
        variants: list[tuple[str, dict[str, Any], str]] = []
        baselines = exp.get("baselines", [])
        for spec in (
            DEFAULT_BASELINES if baselines == "all" else _names(baselines, "baselines", name)
        ):
            spec = _spec(spec, "a baseline codec", name)
            for chunk in _as_list(exp.get("chunk", [None])):
                if chunk is not None and not _positive(chunk):
                    # a negative chunk coded nothing and reported 0.00 %
                    raise ValueError(
                        f"experiment {name!r}: chunk must be a positive number of bytes, not "
                        f"{chunk!r}"
                    )
                codec = make_codec(spec)
                label = codec.label + (f" [{chunk}B chunks]" if chunk else "")
                variants.append(("baseline", {"codec": spec, "chunk": chunk}, label))
        blocks = exp.get("lmgc", [])  # one block of grid axes, or a list of blocks
        blocks = blocks if isinstance(blocks, list) else [blocks or {}]
        for block in blocks:
            unknown = sorted(set(block) - set(DEFAULT_LMGC)) if isinstance(block, dict) else None
            if unknown is None or unknown:
                raise ValueError(
                    f"experiment {name!r}: an lmgc block is a mapping of "
                    f"{', '.join(DEFAULT_LMGC)}; not {unknown or block!r}"
                )
            lm = {**DEFAULT_LMGC, **block}
            if lm["measure"] not in MEASURES:
                raise ValueError(
                    f"experiment {name!r}: measure must be one of {', '.join(MEASURES)}, "
                    f"not {lm['measure']!r}"
                )
            for ser, pri, win, bat in itertools.product(
                _as_list(lm["serializer"]), _as_list(lm["prior"]), _as_list(lm["window"]),
                _as_list(lm["batch"]),
            ):  # fmt: skip
                ser, pri = _spec(ser, "a serializer", name), _spec(pri, "a prior", name)
                spec = {
                    "serializer": ser, "prior": pri, "coder": _spec(lm["coder"], "coder", name),
                    "window": win, "batch": bat, "measure": lm["measure"],
                }  # fmt: skip
                label = f"lmgc {prior_label(pri)} · {serializer_label(ser)} · w{win}"
                if bat:
                    label += f" b{bat}"
                if lm["measure"] != "code":  # each measure its own row, not merged
                    label += f" (ideal: {lm['measure']})"
                if spec_dict(lm["coder"]).get("name", "range") != "range":
                    label += f" [{spec_dict(lm['coder'])['name']}]"
                variants.append(("lmgc", spec, label))
        for wname in wl_names:
            if wname not in by_name:
                raise ValueError(f"experiment {name!r} names unknown workload {wname!r}")
            w = by_name[wname]
            snaps = w.snapshots
            if exp.get("max_snapshots"):
                snaps = [snaps[int(i)] for i in _pick(len(snaps), int(exp["max_snapshots"]))]
            for stages in stage_lists:
                for kind, spec, label in variants:
                    full = label if not stages else f"{stage_label(stages)} + {label}"
                    if kind == "lmgc":
                        spec = _with_layout(spec, w, max_floats)
                    for snap in snaps:
                        yield Cell(name, wname, snap, kind, spec, stages, max_floats, where, full)


def cell_key(cell: Cell, data_hash: str) -> str:
    ident = {
        "v": CELL_VERSION, "kind": cell.kind, "spec": cell.spec, "stages": cell.stages,
        "max_floats": cell.max_floats, "where": cell.where, "data": data_hash,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def _build_stages(stages: list[dict[str, Any]]) -> list[Any]:
    return [ComponentSpec.parse(s, "stage").build("stage") for s in stages]


def stage_payload(x: np.ndarray, stages: list[dict[str, Any]]) -> tuple[bytes, str]:
    """The bytes a classical codec gets after ``stages``: without stages the raw float32 bytes;
    with stages a self-describing buffer (a JSON header with the stage states and the parts'
    names, dtypes and lengths, then every part's raw bytes), so everything that decoding needs
    is counted. Returns ``(payload, dtype)`` where dtype is ``float32`` or ``bytes``."""
    if not stages:
        return np.ascontiguousarray(x, dtype="<f4").tobytes(), "float32"
    parts: dict[str, np.ndarray] = {"data": x.reshape(-1)}
    states = []
    for stage in _build_stages(stages):
        parts, state = stage.forward(parts)
        states.append(state)
    head = {
        "states": states,
        "parts": [[k, np.asarray(v).dtype.str, int(np.asarray(v).size)] for k, v in parts.items()],
    }
    hb = json.dumps(head, separators=(",", ":")).encode()
    body = b"".join(np.ascontiguousarray(v).tobytes() for v in parts.values())
    return len(hb).to_bytes(4, "little") + hb + body, "bytes"


def run_baseline(cell: Cell, x: np.ndarray) -> dict[str, Any]:
    codec = make_codec(cell.spec["codec"])
    miss = missing_modules(codec)
    if miss:
        return {"ok": False, "skipped": True, "error": f"needs {', '.join(miss)}"}
    payload, kind = stage_payload(x, cell.stages)
    if codec.float32_only and kind != "float32":
        return {"ok": False, "skipped": True, "error": "float32-only codec, non-float payload"}
    m = measure(codec, payload, cell.spec.get("chunk"))
    out = m.as_dict()
    out["original_bytes"] = int(x.nbytes)  # rate against the float32 input, stages included
    out["payload_bytes"] = len(payload)
    out["rate"] = 100.0 * m.compressed_bytes / x.nbytes if m.ok else None
    return out


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def run_lmgc(cell: Cell, x: np.ndarray) -> dict[str, Any]:
    from lmgc_core.coding.pipeline import Pipeline

    spec = cell.spec
    config = {
        "stages": cell.stages, "serializer": spec["serializer"], "prior": spec["prior"],
        "coder": spec["coder"], "window": spec["window"], "batch": spec["batch"],
    }  # fmt: skip
    pipe = Pipeline.from_config(config)
    out: dict[str, Any] = {"codec": cell.label, "original_bytes": int(x.nbytes)}
    if spec.get("measure", "code") != "code":
        t0 = time.perf_counter()
        est = pipe.estimate(x, teacher_forced=spec["measure"] == "teacher-forced")
        out.update(
            compressed_bytes=est["ideal_bits"] / 8, compress_s=time.perf_counter() - t0,
            decompress_s=None, ok=True, error="", estimate=est["method"],
            rate=100.0 * est["ideal_bits"] / 8 / x.nbytes,
        )  # fmt: skip
        return out
    expected = pipe.reconstruct(x) if cell.stages else x
    t0 = time.perf_counter()
    blob = pipe.compress(x)
    t1 = time.perf_counter()
    from lmgc_core.stream import container

    header_bytes = container.read_header(blob)[1]
    try:
        back = pipe.decompress(blob)
        ok = _bits_equal(back, expected)
        error = "" if ok else "round trip mismatch"
    except Exception as exc:
        ok, error = False, f"{type(exc).__name__}: {exc}"
    t2 = time.perf_counter()
    out.update(
        compressed_bytes=len(blob), compress_s=t1 - t0, decompress_s=t2 - t1, ok=ok, error=error,
        rate=100.0 * len(blob) / x.nbytes if ok else None, header_bytes=header_bytes,
    )  # fmt: skip
    return out


def run_cell(cell: Cell, x: np.ndarray) -> dict[str, Any]:
    from lmgc_core.util.errors import ConfigError, PluginError

    try:
        res = run_baseline(cell, x) if cell.kind == "baseline" else run_lmgc(cell, x)
    except (PluginError, ConfigError) as exc:
        # a plugin or its dependency is not installed, or this combination is not supported
        # (e.g. an alphabet the model cannot spell): n/a, not a codec failure
        res = {"ok": False, "skipped": True, "error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # one broken cell never stops the grid
        res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    res.setdefault("skipped", False)
    return res


# ---------------------------------------------------------------------------------------------
# running


def _load_cache(path: Path) -> dict[str, dict[str, Any]]:
    cache: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption
            cache[rec["key"]] = rec
    return cache


def run_grid(
    cfg: dict[str, Any],
    out_dir: str | Path,
    *,
    zarr_path: str | None = None,
    fresh: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) every cell of ``cfg``; returns one record per cell of this config."""
    from tqdm import tqdm

    out = Path(out_dir)
    workloads = build_workloads(cfg, zarr_path)  # a missing store: refused before out exists
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "cells.jsonl"
    if fresh and cache_path.exists():
        cache_path.unlink()
    cache = _load_cache(cache_path)
    by_name = {w.name: w for w in workloads}
    cells = list(expand(cfg, workloads))
    data_cache: dict[tuple, tuple[np.ndarray, str]] = {}

    def data_for(cell: Cell) -> tuple[np.ndarray, str]:
        k = (cell.workload, cell.snapshot, cell.max_floats, cell.where)
        if k not in data_cache:
            full = np.ascontiguousarray(by_name[cell.workload].load(cell.snapshot), dtype="<f4")
            x = np.ascontiguousarray(take_slice(full, cell.max_floats, cell.where))
            data_cache.clear() if len(data_cache) > 8 else None
            data_cache[k] = (x, hashlib.sha256(x.tobytes()).hexdigest())
        return data_cache[k]

    records = []
    n_cached = 0
    bar = tqdm(cells, desc="bench", unit="cell", disable=not progress, dynamic_ncols=True)
    with open(cache_path, "a") as fh:
        for cell in bar:
            x, h = data_for(cell)
            cell.key = cell_key(cell, h)
            base = {
                "key": cell.key, "experiment": cell.experiment, "workload": cell.workload,
                "snapshot": cell.snapshot, "kind": cell.kind, "label": cell.label,
                "stage": stage_label(cell.stages), "n_floats": int(x.size),
                "spec": cell.spec, "stages": cell.stages,
            }  # fmt: skip
            if cell.key in cache:
                rec = {**cache[cell.key], **base}
                n_cached += 1
            else:
                bar.set_postfix_str(f"{cell.workload}#{cell.snapshot} {cell.label[:40]}")
                rec = {**base, **run_cell(cell, x), "time": time.time()}
                rec["label"] = cell.label
                if not rec.get("skipped"):  # a missing plugin may be installed by the next run
                    fh.write(json.dumps(rec, default=_json_default) + "\n")
                    fh.flush()
                    cache[cell.key] = rec
            records.append(rec)
    if log:
        bad = [r for r in records if not r["ok"] and not r.get("skipped")]
        log(f"{len(records)} cells ({n_cached} from cache), {len(bad)} failed")
        for r in bad[:20]:
            log(f"  FLAGGED {r['label']} on {r['workload']}#{r['snapshot']}: {r['error']}")
        reasons = {}
        for r in records:
            if r.get("skipped") and r["kind"] == "lmgc":
                reasons.setdefault(r["error"], r["label"])
        for reason, label in reasons.items():
            log(f"  n/a: {label}: {reason}")
    return records


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer | np.floating):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


# ---------------------------------------------------------------------------------------------
# aggregation and outputs


PAYLOAD_SUFFIX = " [coded blocks only, header excluded]"


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over snapshots for each (experiment, workload, label); failed cells are
    counted in ``n_failed`` and excluded from the statistics."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["experiment"], r["workload"], r["label"]), []).append(r)
    for (exp, wl, label), rs in list(groups.items()):
        # lmgc streams carry a JSON header (config, prior fingerprint, SHA-256, block table);
        # on tiny inputs it dominates, so also report the coded blocks alone when it is >= 1 %
        good = [r for r in rs if r["ok"] and r.get("header_bytes")]
        if good and np.mean([r["header_bytes"] / r["original_bytes"] for r in good]) >= 0.01:
            derived = []
            for r in good:
                payload = r["compressed_bytes"] - r["header_bytes"]
                derived.append(
                    {**r, "label": label + PAYLOAD_SUFFIX, "compressed_bytes": payload,
                     "rate": 100.0 * payload / r["original_bytes"], "derived": True}
                )  # fmt: skip
            groups[(exp, wl, label + PAYLOAD_SUFFIX)] = derived
    rows = []
    for (exp, wl, label), rs in groups.items():
        good = [r for r in rs if r["ok"]]
        first = rs[0]
        row = {
            "experiment": exp, "workload": wl, "label": label, "kind": first["kind"],
            "stage": first["stage"], "n_floats": first["n_floats"], "n": len(good),
            "n_failed": sum(1 for r in rs if not r["ok"] and not r.get("skipped")),
            "n_skipped": sum(1 for r in rs if r.get("skipped")),
            "error": next((r["error"] for r in rs if not r["ok"]), ""),
            "spec": first["spec"], "derived": bool(first.get("derived")),
            "header_bytes": float(np.mean([r["header_bytes"] for r in good]))
            if good and good[0].get("header_bytes") is not None else None,
        }  # fmt: skip
        if good:
            rates = np.array([r["rate"] for r in good], dtype=float)
            nbytes = sum(r["original_bytes"] for r in good)
            tc = sum(r["compress_s"] for r in good)
            td = [r["decompress_s"] for r in good]
            row.update(
                rate_mean=float(rates.mean()), rate_std=float(rates.std(ddof=1)) if len(rates) > 1
                else 0.0, compress_mb_s=nbytes / tc / 1e6 if tc > 0 else None,
                decompress_mb_s=(nbytes / sum(td) / 1e6) if None not in td and sum(td) > 0
                else None, bits_per_float=float(rates.mean()) * 32 / 100,
            )  # fmt: skip
        rows.append(row)
    return rows


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _fmt(row: dict[str, Any] | None) -> str:
    if row is None:
        return ""
    if row.get("n", 0) == 0:
        return "flagged" if row["n_failed"] else "n/a"
    return f"{row['rate_mean']:.2f} ± {row['rate_std']:.2f}"


def _fmt_speed(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}"


def markdown_tables(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> str:
    """One table per experiment: codecs as rows, workloads as columns (rate %, mean ± std over
    snapshots), compression / decompression throughput averaged over workloads, and, when the
    experiment has both, each lmgc codec's improvement over the best baseline per workload
    (percentage points; negative when lmgc is worse)."""
    lines: list[str] = []
    for exp in cfg["experiments"]:
        name = exp["name"]
        ers = [r for r in rows if r["experiment"] == name]
        if not ers:
            continue
        wls = list(dict.fromkeys(r["workload"] for r in ers))
        labels = list(dict.fromkeys(r["label"] for r in ers))
        cell = {(r["label"], r["workload"]): r for r in ers}
        lines.append(f"### {name}\n")
        if exp.get("description"):
            lines.append(exp["description"].strip() + "\n")
        mf = exp.get("max_floats")
        nfl = sorted({r["n_floats"] for r in ers})
        lines.append(
            "Compression rate % (compressed / original bytes × 100, lower is better), mean ± std "
            f"over snapshots; inputs of {', '.join(f'{n:,}' for n in nfl)} float32 values"
            + (f" (a contiguous slice of at most {mf:,})" if mf else " (whole gradient vectors)")
            + ".\n"
        )
        head = ["codec", *wls, "compress MB/s", "decompress MB/s"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
        for label in labels:
            rs = [cell.get((label, w)) for w in wls]
            good = [r for r in rs if r and r.get("n")]
            cs = [r["compress_mb_s"] for r in good if r.get("compress_mb_s")]
            ds = [r["decompress_mb_s"] for r in good if r.get("decompress_mb_s")]
            lines.append(
                "| " + " | ".join(
                    [_md(label), *(_fmt(r) for r in rs),
                     _fmt_speed(float(np.mean(cs)) if cs else None),
                     _fmt_speed(float(np.mean(ds)) if ds else None)]
                ) + " |"
            )  # fmt: skip
        # improvement of every lmgc row over the best baseline (same stage) per workload
        lm_labels = [lab for lab in labels if cell_kind(ers, lab) == "lmgc"]
        bl_labels = [lab for lab in labels if cell_kind(ers, lab) == "baseline"]
        if lm_labels and bl_labels:
            lines.append("")
            lines.append(
                "Improvement over the best baseline (percentage points of rate: best baseline − "
                "lmgc; negative means lmgc is worse):\n"
            )
            lines.append("| lmgc codec | " + " | ".join(wls) + " |")
            lines.append("|---|" + "---:|" * len(wls))
            for lab in lm_labels:
                vals = []
                for w in wls:
                    r = cell.get((lab, w))
                    cands = [
                        cell[(b, w)] for b in bl_labels
                        if (b, w) in cell and cell[(b, w)].get("n")
                        and cell[(b, w)]["stage"] == (r or {}).get("stage")
                    ]  # fmt: skip
                    if not r or not r.get("n") or not cands:
                        vals.append("")
                        continue
                    best = min(cands, key=lambda c: c["rate_mean"])
                    vals.append(
                        f"{best['rate_mean'] - r['rate_mean']:+.2f} (best: {_md(best['label'])})"
                    )
                lines.append(f"| {_md(lab)} | " + " | ".join(vals) + " |")
        flagged = [r for r in ers if r["n_failed"]]
        if flagged:
            lines.append("")
            for r in flagged:
                lines.append(
                    f"* **flagged** {r['label']} on {r['workload']}: {r['n_failed']} cell(s) "
                    f"failed, not reported ({r['error']})"
                )
        lines.append("")
    return "\n".join(lines)


def cell_kind(rows: list[dict[str, Any]], label: str) -> str:
    return next(r["kind"] for r in rows if r["label"] == label)


CSV_FIELDS = (
    "experiment", "workload", "label", "kind", "stage", "n_floats", "n", "n_failed",
    "n_skipped", "rate_mean", "rate_std", "bits_per_float", "compress_mb_s", "decompress_mb_s",
    "header_bytes", "derived", "error",
)  # fmt: skip
CELL_FIELDS = (
    "experiment", "workload", "snapshot", "label", "kind", "stage", "n_floats", "original_bytes",
    "compressed_bytes", "header_bytes", "rate", "compress_s", "decompress_s", "ok", "skipped",
    "error", "key",
)  # fmt: skip


def write_outputs(
    records: list[dict[str, Any]], cfg: dict[str, Any], out_dir: str | Path, meta: dict[str, Any]
) -> dict[str, Path]:
    """``results.md``, ``summary.csv`` (aggregates), ``cells.csv`` (every cell) and plots."""
    import csv

    out = Path(out_dir)
    rows = aggregate(records)
    paths: dict[str, Path] = {}
    with open(out / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    paths["summary_csv"] = out / "summary.csv"
    with open(out / "cells.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, CELL_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(records)
    paths["cells_csv"] = out / "cells.csv"
    from .plots import make_plots

    plots = make_plots(rows, cfg, out / "plots")
    md = [f"# lmgc bench: {cfg.get('title', 'results')}\n"]
    md.append("```\n" + "\n".join(f"{k}: {v}" for k, v in meta.items()) + "\n```\n")
    md.append(markdown_tables(rows, cfg))
    if plots:
        md.append("## Plots\n")
        md += [f"![{p.stem}](plots/{p.name})\n" for p in plots]
    (out / "results.md").write_text("\n".join(md))
    paths["markdown"] = out / "results.md"
    paths.update({f"plot_{p.stem}": p for p in plots})
    return paths


def machine_info() -> dict[str, Any]:
    import os
    import platform

    info = {
        "machine": platform.machine(), "cpu": _cpu_name(), "cores": os.cpu_count(),
        "python": platform.python_version(), "platform": platform.platform(terse=True),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }  # fmt: skip
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def bench(
    config: str | Path | dict[str, Any],
    *,
    out_dir: str | Path | None = None,
    zarr_path: str | None = None,
    fresh: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Load a config (path or dict), run its grid and write every output."""
    cfg = copy.deepcopy(config) if isinstance(config, dict) else load_config(config)
    out = Path(out_dir or cfg.get("output") or "bench-out/results")
    t0 = time.perf_counter()
    records = run_grid(cfg, out, zarr_path=zarr_path, fresh=fresh, progress=progress, log=log)
    meta = {**machine_info(), "config": str(config) if not isinstance(config, dict) else "<dict>",
            "cells": len(records), "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    return write_outputs(records, cfg, out, meta)
