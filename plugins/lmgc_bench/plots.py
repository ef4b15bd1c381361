"""PNG plots of aggregated bench rows (matplotlib, Agg backend, imported lazily).

Each experiment of a config asks for plots with ``plot: [kind, ...]``:

* ``codecs``     -- rate per codec (horizontal bars, one per workload, std as error bars);
* ``window``     -- rate vs window size (the paper's Fig. 2), one line per workload and codec;
* ``bytes_per_group`` -- rate vs hex bytes per group (Fig. 3); 0 (no grouping) drawn as "none";
* ``stages``     -- rate with quantization / sparsification (Fig. 4), one group of bars per
  stage, one bar per codec (lmgc vs lzma ...), mean over workloads;
* ``throughput`` -- rate vs compression throughput (MB/s, log scale) of every codec.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _good(rows: list[dict[str, Any]], derived: bool = False) -> list[dict[str, Any]]:
    """Rows with results; ``derived`` also keeps the header-excluded lmgc rows."""
    return [r for r in rows if r.get("n") and (derived or not r.get("derived"))]


def _short(label: str, n: int = 52) -> str:
    label = label.replace(" [coded blocks only, header excluded]", " [no header]")
    return label if len(label) <= n else label[: n - 1] + "…"


def _strip(label: str, pattern: str) -> str:
    return re.sub(r"( · )+", " · ", re.sub(pattern, "", label)).strip(" ·")


def plot_codecs(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    plt = _plt()
    rows = _good(rows, derived=True)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    wls = list(dict.fromkeys(r["workload"] for r in rows))
    cell = {(r["label"], r["workload"]): r for r in rows}
    h = max(3.0, 0.32 * len(labels) * max(1, len(wls)) ** 0.5 + 1.2)
    fig, ax = plt.subplots(figsize=(8, h))
    bar = 0.8 / max(1, len(wls))
    y = np.arange(len(labels))
    for i, w in enumerate(wls):
        vals = [cell[(lab, w)]["rate_mean"] if (lab, w) in cell else np.nan for lab in labels]
        errs = [cell[(lab, w)]["rate_std"] if (lab, w) in cell else 0 for lab in labels]
        ax.barh(y + i * bar - 0.4 + bar / 2, vals, bar, xerr=errs, label=w, capsize=2)
    lo = min(r["rate_mean"] - r["rate_std"] for r in rows)
    ax.set_xlim(left=max(0.0, 5 * np.floor(lo / 5) - 5))
    ax.set_yticks(y, [_short(lab) for lab in labels], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("compression rate % (lower is better)")
    ax.axvline(100, color="grey", lw=0.8, ls=":")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _line_plot(
    rows: list[dict[str, Any]],
    path: Path,
    title: str,
    key: Any,
    xlabel: str,
    xticks: Any = None,
    logx: bool = False,
) -> Path:
    plt = _plt()
    rows = _good(rows)
    series: dict[str, list[tuple[float, float, float]]] = {}
    for r in rows:
        x, name = key(r)
        if x is None:
            continue
        series.setdefault(f"{r['workload']}: {name}", []).append((x, r["rate_mean"], r["rate_std"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, pts in series.items():
        pts.sort()
        xs, ys, es = zip(*pts, strict=True)
        ax.errorbar(xs, ys, yerr=es, marker="o", ms=3, capsize=2, label=name[:70])
    if logx:
        ax.set_xscale("log", base=2)
    if xticks:
        ax.set_xticks(*xticks)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("compression rate % (lower is better)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_window(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    def key(r: dict[str, Any]) -> tuple[Any, str]:
        spec = r.get("spec") or {}
        if r["kind"] != "lmgc":
            return None, ""
        return spec["window"], _strip(r["label"], r"w\d+")

    return _line_plot(rows, path, title, key, "window (tokens, log scale)", logx=True)


def plot_bpg(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    groups = sorted(
        {
            (r.get("spec") or {}).get("serializer", {}).get("bytes_per_group", 4)
            for r in rows
            if r["kind"] == "lmgc"
        }
    )
    pos = {g: i for i, g in enumerate(groups)}

    def key(r: dict[str, Any]) -> tuple[Any, str]:
        if r["kind"] != "lmgc":
            return None, ""
        g = r["spec"]["serializer"].get("bytes_per_group", 4)
        return pos[g], _strip(r["label"], r"g\d+")

    ticks = (list(pos.values()), [str(g) if g else "none" for g in pos])
    return _line_plot(rows, path, title, key, "hex bytes per group", ticks)


def plot_stages(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    plt = _plt()
    rows = _good(rows)
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    codecs = list(
        dict.fromkeys(r["label"].split(" + ", 1)[-1] if r["stage"] != "none" else r["label"]
                      for r in rows)
    )  # fmt: skip
    vals: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        base = r["label"].split(" + ", 1)[-1] if r["stage"] != "none" else r["label"]
        vals.setdefault((r["stage"], base), []).append(r["rate_mean"])
    fig, ax = plt.subplots(figsize=(7, 4))
    bar = 0.8 / max(1, len(codecs))
    x = np.arange(len(stages))
    for i, c in enumerate(codecs):
        ys = [np.mean(vals[(s, c)]) if (s, c) in vals else np.nan for s in stages]
        es = [np.std(vals[(s, c)]) if (s, c) in vals else 0 for s in stages]
        ax.bar(x + i * bar - 0.4 + bar / 2, ys, bar, yerr=es, capsize=2, label=c[:60])
    ax.set_xticks(x, stages, fontsize=8)
    ax.set_ylabel("compression rate % of float32 (lower is better)")
    ax.set_title(title + " (mean over workloads; bars: std across workloads)", fontsize=9)
    ax.legend(fontsize=6)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_throughput(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    plt = _plt()
    # estimate-only rows ("(ideal: ...)") have no coding throughput
    rows = [r for r in _good(rows) if r.get("compress_mb_s") and "(ideal" not in r["label"]]
    pts: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        pts.setdefault(r["label"], []).append((r["compress_mb_s"], r["rate_mean"]))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, ps in pts.items():
        xs, ys = zip(*ps, strict=True)
        x, y = float(np.exp(np.mean(np.log(xs)))), float(np.mean(ys))
        marker = "*" if label.startswith("lmgc") else "o"
        ax.scatter([x], [y], marker=marker, s=60 if marker == "*" else 25)
        ax.annotate(label[:38], (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("compression throughput, MB/s of float32 input (log; this run, this machine)")
    ax.set_ylabel("compression rate % (mean over workloads)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


PLOTS = {
    "codecs": plot_codecs,
    "window": plot_window,
    "bytes_per_group": plot_bpg,
    "stages": plot_stages,
    "throughput": plot_throughput,
}


def make_plots(rows: list[dict[str, Any]], cfg: dict[str, Any], out_dir: Path) -> list[Path]:
    made: list[Path] = []
    for exp in cfg["experiments"]:
        kinds = exp.get("plot") or []
        kinds = [kinds] if isinstance(kinds, str) else kinds
        ers = [r for r in rows if r["experiment"] == exp["name"]]
        if not _good(ers):
            continue
        for kind in kinds:
            if kind not in PLOTS:
                raise ValueError(f"unknown plot kind {kind!r}; known: {', '.join(PLOTS)}")
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"{exp['name']}-{kind}.png"
            made.append(PLOTS[kind](ers, path, f"{exp['name']}: {kind}"))
    return made
