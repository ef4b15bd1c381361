"""Does lmgc use the cores? Zarr v3 chunk threads, Dask workers and ``lmgc compress --jobs``,
each next to zstd, Blosc and PCodec measured in the same run (issue 12).

    python benchmarks/parallel.py [--prior float|adaptive] [--parts zarr,dask,cli]
                                  [--repeat 3] [--cli-mb 64] [--json results.json]

Data: the real gradients of ``../shared/data/mlp_digits_grads.npy`` (7 x 85,002 float32),
flattened and tiled as ``[g, -g[::-1], g, -g[::-1], ...]`` to the needed size (the reversed,
negated copy keeps the statistics but gives LZ codecs no long repeats to find). Zarr and Dask use
a (16, 262144) float32 array with one chunk per row (16 chunks of 1 MiB); the CLI a
(16, 1048576) float32 ``.npy`` of 64 MiB.

* zarr: write (``z[:] = x``) and read (``z[:]``) of a Zarr v3 array on disk, with zarr's
  default thread pool vs ``zarr.config`` ``threading.max_workers=1``; each setting runs in a
  fresh interpreter (zarr creates its pool once per process). CPU % = process CPU time / wall.
* dask: ``lmgc_core.codecs.dask.to_zarr`` on a ``LocalCluster`` of 2 workers x 1 thread vs 1 worker
  x 1
  thread, cluster start-up and pipeline builds excluded (``warm_workers`` plus one untimed
  write), then a read with ``da.from_zarr(...).compute()``; CPU % sums the workers' CPU time.
  Reports each worker's pipeline builds and model loads.
* cli: ``lmgc compress --jobs 2`` vs ``--jobs 1`` (and ``decompress``) as subprocesses, then the
  same commands run by this process's imported CLI ("in process": no interpreter start, imports
  or exit, which no thread can share); the baselines code the same 64 MiB in-process with 1 vs 2
  threads (zstd and Blosc2 use their own threads, PCodec codes the 16 rows on a thread pool).

Every read-back is compared bit for bit (a mismatch aborts). Times are the best of ``--repeat``;
the 1-minute load average is printed beside each part because other processes share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lmgc_core.coding.pipeline import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "mlp_digits_grads.npy"
ZARR_SHAPE = (16, 262144)
BASELINES = ("zstd", "blosc", "pcodec")
LMGC_BIN = shutil.which("lmgc") or str(Path(sys.executable).parent / "lmgc")


def real_like(shape: tuple[int, ...], path: Path = DATA) -> np.ndarray:
    """Real gradients tiled as ``[g, -g[::-1], ...]`` to ``shape`` (float32)."""
    g = np.load(path).astype(np.float32).reshape(-1)
    cycle = np.concatenate([g, -g[::-1]])
    return np.resize(cycle, int(np.prod(shape))).reshape(shape)


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def lmgc_config(prior: str) -> dict[str, Any]:
    return {"prior": {"name": prior}}


def zarr_codecs(name: str, prior: str) -> dict[str, Any]:
    """``create_array`` keyword arguments for one codec."""
    from zarr.codecs import BloscCodec, BytesCodec, PCodec, ZstdCodec

    if name == "lmgc":
        from lmgc_core.codecs.dask import codec_kwargs

        return codec_kwargs(lmgc_config(prior))
    if name == "zstd":
        return {"serializer": BytesCodec(), "compressors": ZstdCodec(level=3)}
    if name == "blosc":
        codec = BloscCodec(cname="zstd", clevel=5, shuffle="shuffle", typesize=4)
        return {"serializer": BytesCodec(), "compressors": codec}
    if name == "pcodec":
        return {"serializer": PCodec(level=8), "compressors": None}
    raise ValueError(name)


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def best(runs: list[dict[str, float]], key: str) -> dict[str, float]:
    return min(runs, key=lambda r: r[key])


# -- zarr (one fresh interpreter per codec and thread setting) --------------------------------


def zarr_child(codec: str, max_workers: int, prior: str, repeat: int) -> dict[str, Any]:
    import zarr

    if max_workers:
        zarr.config.set({"threading.max_workers": max_workers})
    x = real_like(ZARR_SHAPE)
    kwargs = zarr_codecs(codec, prior)
    if codec == "lmgc":
        from lmgc_core.codecs.numcodecs_codec import cached_pipeline

        cached_pipeline(lmgc_config(prior))  # build (load) the prior outside the timings
    tmp = Path(tempfile.mkdtemp(prefix="lmgc-par-"))
    writes, reads = [], []
    try:
        for i in range(repeat + 1):  # run 0 warms up (imports, JIT compiles), not reported
            path = tmp / f"a{i}.zarr"
            z = zarr.create_array(
                str(path), shape=x.shape, chunks=(1, x.shape[1]), dtype=x.dtype, **kwargs
            )
            w0, c0 = time.perf_counter(), time.process_time()
            z[:] = x
            w1, c1 = time.perf_counter(), time.process_time()
            back = zarr.open_array(str(path), mode="r")[:]
            w2, c2 = time.perf_counter(), time.process_time()
            if back.dtype != x.dtype or back.tobytes() != x.tobytes():
                raise SystemExit(f"{codec}: Zarr read-back is not bit-exact")
            if i:
                writes.append({"s": w1 - w0, "cpu": 100 * (c1 - c0) / (w1 - w0)})
                reads.append({"s": w2 - w1, "cpu": 100 * (c2 - c1) / (w2 - w1)})
            size = du(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "codec": codec,
        "max_workers": max_workers or "default",
        "write": best(writes, "s"),
        "read": best(reads, "s"),
        "ratio": size / x.nbytes,
    }


def run_zarr(prior: str, repeat: int) -> list[dict[str, Any]]:
    rows = []
    for codec in ("lmgc", *BASELINES):
        for workers in (0, 1):
            cmd = [sys.executable, __file__, "--zarr-child", codec, str(workers)]
            cmd += ["--prior", prior, "--repeat", str(repeat)]
            before = load()
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            row["load"] = f"{before}->{load()}"
            rows.append(row)
    print(f"\n## Zarr v3 write/read of {ZARR_SHAPE} float32, 16 chunks (best of {repeat})")
    print("| codec | threads | write s | write CPU % | read s | read CPU % | size % | load |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        label = f"lmgc ({prior})" if r["codec"] == "lmgc" else r["codec"]
        print(
            f"| {label} | {r['max_workers']} | {r['write']['s']:.3f} | {r['write']['cpu']:.0f} | "
            f"{r['read']['s']:.3f} | {r['read']['cpu']:.0f} | {100 * r['ratio']:.2f} | "
            f"{r['load']} |"
        )
    for codec in ("lmgc", *BASELINES):
        par, one = (r for r in rows if r["codec"] == codec)
        write, read = (one[k]["s"] / par[k]["s"] for k in ("write", "read"))
        print(f"{codec}: default pool vs max_workers=1: write x{write:.2f}, read x{read:.2f}")
    return rows


# -- dask -----------------------------------------------------------------------------------


def _cpu() -> float:
    return time.process_time()


def _reset() -> None:
    from lmgc_core.codecs.numcodecs_codec import clear_pipeline_cache

    clear_pipeline_cache()


def run_dask(prior: str, repeat: int, rows: int = ZARR_SHAPE[0]) -> list[dict[str, Any]]:
    import dask
    import dask.array as da
    import zarr
    from distributed import wait

    from lmgc_core.codecs.dask import connect, to_zarr, warm_workers, worker_stats

    x = real_like((rows, ZARR_SHAPE[1]))
    config = lmgc_config(prior)
    tmp = Path(tempfile.mkdtemp(prefix="lmgc-dask-"))
    # Each worker stores the blocks it holds: a stolen task would first copy its block over (and
    # a block unpickled on the other worker may be misaligned, which PCodec refuses).
    dask.config.set({"distributed.scheduler.work-stealing": False})
    rows = []
    try:
        for n_workers in (2, 1):
            with connect(n_workers=n_workers, threads_per_worker=1) as client:
                client.run(_reset)
                warm_workers(client, config)
                # the blocks live on the workers before any timing (copied there: a block
                # unpickled from the graph may be misaligned, which PCodec refuses)
                darr = da.from_array(x, chunks=(1, x.shape[1])).map_blocks(np.copy)
                darr = client.persist(darr)
                wait(darr)
                for codec in ("lmgc", *BASELINES):
                    extra = {} if codec == "lmgc" else zarr_codecs(codec, prior)
                    writes, reads = [], []
                    for i in range(repeat + 1):
                        path = str(tmp / f"{codec}{n_workers}_{i}.zarr")
                        c0, w0 = sum(client.run(_cpu).values()), time.perf_counter()
                        to_zarr(darr, path, config, **extra)
                        w1, c1 = time.perf_counter(), sum(client.run(_cpu).values())
                        back = da.from_zarr(path).compute()
                        w2, c2 = time.perf_counter(), sum(client.run(_cpu).values())
                        if back.tobytes() != x.tobytes():
                            raise SystemExit(f"dask {codec}: read-back is not bit-exact")
                        if zarr.open_array(path, mode="r")[:].tobytes() != x.tobytes():
                            raise SystemExit(f"dask {codec}: store is not bit-exact")
                        if i:
                            writes.append({"s": w1 - w0, "cpu": 100 * (c1 - c0) / (w1 - w0)})
                            reads.append({"s": w2 - w1, "cpu": 100 * (c2 - c1) / (w2 - w1)})
                    row = {
                        "codec": codec,
                        "workers": n_workers,
                        "write": best(writes, "s"),
                        "read": best(reads, "s"),
                        "load": load(),
                    }
                    if codec == "lmgc":
                        stats = worker_stats(client).values()
                        row["builds"] = [s["builds"] for s in stats]
                        row["model_loads"] = [sum(s["model_loads"].values()) for s in stats]
                        row["encoded"] = [s["encoded"] for s in stats]
                    rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n## Dask to_zarr of {x.shape} float32 ({x.nbytes >> 20} MiB, chunks of one row) on "
        f"LocalCluster, workers x 1 thread (best of {repeat})"
    )
    print("| codec | workers | write s | write CPU % | read s | read CPU % | load |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        label = f"lmgc ({prior})" if r["codec"] == "lmgc" else r["codec"]
        print(
            f"| {label} | {r['workers']} | {r['write']['s']:.3f} | {r['write']['cpu']:.0f} | "
            f"{r['read']['s']:.3f} | {r['read']['cpu']:.0f} | {r['load']} |"
        )
    for codec in ("lmgc", *BASELINES):
        two, one = (r for r in rows if r["codec"] == codec)
        print(
            f"{codec}: 2 workers vs 1: write x{one['write']['s'] / two['write']['s']:.2f}, "
            f"read x{one['read']['s'] / two['read']['s']:.2f}"
        )
    for r in rows:
        if r["codec"] == "lmgc":
            print(
                f"lmgc, {r['workers']} worker(s): pipeline builds per worker {r['builds']}, "
                f"model loads {r['model_loads']}, chunks encoded {r['encoded']} "
                f"(counters since the cluster started, {repeat + 1} writes)"
            )
    return rows


# -- CLI ------------------------------------------------------------------------------------


def _child_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _timed_cli(*args: str) -> dict[str, float]:
    os.sync()  # the earlier runs' files are written back now, not by the kernel during this one
    c0, w0 = _child_cpu(), time.perf_counter()
    subprocess.run([LMGC_BIN, *args], check=True, capture_output=True)
    w1, c1 = time.perf_counter(), _child_cpu()
    return {"s": w1 - w0, "cpu": 100 * (c1 - c0) / (w1 - w0)}


def _timed_in_process(*args: str) -> dict[str, float]:
    """The same command run by this process's CLI, already imported: no interpreter start, no
    imports, no exit, as the in-process baselines are measured. What the command does around
    the coding (reads, the input's hash, writes) is still in."""
    from lmgc_core.cli.commands import cli

    os.sync()
    c0, w0 = time.process_time(), time.perf_counter()
    try:
        cli.main(list(args), prog_name="lmgc")
    except SystemExit as exc:
        if exc.code:
            raise
    w1, c1 = time.perf_counter(), time.process_time()
    return {"s": w1 - w0, "cpu": 100 * (c1 - c0) / (w1 - w0)}


def _baseline(codec: str, x: np.ndarray, jobs: int) -> tuple[Callable[[], Any], Callable]:
    """(compress, decompress) closures of an in-process baseline with ``jobs`` threads."""
    raw = x.tobytes()
    if codec == "zstd":
        import zstandard

        def enc() -> Any:
            return zstandard.ZstdCompressor(level=3, threads=jobs if jobs > 1 else 0).compress(raw)

        def dec(blob: Any) -> bytes:
            return zstandard.ZstdDecompressor().decompress(blob)

    elif codec == "blosc":
        import blosc2

        cp = {"codec": blosc2.Codec.ZSTD, "clevel": 5, "typesize": 4, "nthreads": jobs}

        def enc() -> Any:
            return blosc2.compress2(raw, **cp)

        def dec(blob: Any) -> bytes:
            return blosc2.decompress2(blob, nthreads=jobs)

    else:
        from pcodec import ChunkConfig, standalone

        from lmgc_core.util.parallel import map_ordered

        def enc() -> Any:
            return map_ordered(lambda r: standalone.simple_compress(r, ChunkConfig()), x, jobs)

        def dec(blob: Any) -> bytes:
            return b"".join(
                np.ascontiguousarray(a, dtype="<f4").tobytes()
                for a in map_ordered(standalone.simple_decompress, blob, jobs)
            )

    return enc, dec


def _cli_row(codec: str, jobs: int, comp: list, deco: list, ratio: float) -> dict[str, Any]:
    return {
        "codec": codec,
        "jobs": jobs,
        "compress": best(comp, "s"),
        "decompress": best(deco, "s"),
        "ratio": ratio,
        "load": load(),
        "runs": {"compress": [r["s"] for r in comp], "decompress": [r["s"] for r in deco]},
    }


def paired_speedup(two: dict[str, Any], one: dict[str, Any], op: str) -> float:
    """Median over repetitions of (1-job time / 2-job time) of runs made back to back: the
    VM's speed drifts by tens of percent between phases, and a pair shares its phase, where the
    best of each setting may come from different phases."""
    pairs = zip(one["runs"][op], two["runs"][op], strict=True)
    return statistics.median(a / b for a, b in pairs)


def _time_lmgc(
    timer: Callable[..., dict[str, float]],
    label: str,
    x: np.ndarray,
    src: Path,
    tmp: Path,
    prior: str,
    repeat: int,
) -> tuple[list[dict[str, Any]], dict[int, bytes]]:
    """``lmgc compress/decompress -j 2`` and ``-j 1`` run by ``timer`` (:func:`_timed_cli` or
    :func:`_timed_in_process`), alternated so load drifts hit both alike; run 0 warms up. Every
    decompressed file must be bit-exact and each setting give the same bytes every run. Returns
    the rows and each setting's archive bytes."""
    times: dict[int, tuple[list, list]] = {2: ([], []), 1: ([], [])}
    outputs: dict[int, bytes] = {}
    out, back = tmp / "out.lmgc", tmp / "back.npy"
    for i in range(repeat + 1):
        for jobs, (comp, deco) in times.items():
            n = str(jobs)
            c = timer("compress", str(src), "-o", str(out), "--prior", prior, "-qj", n)
            d = timer("decompress", str(out), "-o", str(back), "-qj", n)
            if np.load(back).tobytes() != x.tobytes():
                raise SystemExit(f"{label}: decompressed file is not bit-exact")
            if outputs.setdefault(jobs, out.read_bytes()) != out.read_bytes():
                raise SystemExit(f"{label}: two runs gave different bytes")
            out.unlink()
            back.unlink()
            if i:
                comp.append(c)
                deco.append(d)
    rows = [
        _cli_row(label, jobs, comp, deco, len(outputs[jobs]) / x.nbytes)
        for jobs, (comp, deco) in times.items()
    ]
    return rows, outputs


def run_cli(prior: str, repeat: int, megabytes: int) -> list[dict[str, Any]]:
    rows_per = megabytes * (1 << 20) // 4 // 16
    x = real_like((16, rows_per))
    tmp = Path(tempfile.mkdtemp(prefix="lmgc-cli-"))
    try:
        src = tmp / "grads.npy"
        np.save(src, x)
        rows, outputs = _time_lmgc(_timed_cli, f"lmgc ({prior})", x, src, tmp, prior, repeat)
        same = outputs[1] == outputs[2]
        label = f"lmgc ({prior}), in process"
        in_rows, in_outputs = _time_lmgc(_timed_in_process, label, x, src, tmp, prior, repeat)
        if in_outputs != outputs:
            raise SystemExit("lmgc in process: other bytes than the command's")
        rows += in_rows
        for codec in BASELINES:
            runs: dict[int, tuple[list, list]] = {2: ([], []), 1: ([], [])}
            sizes = {}
            for i in range(repeat + 1):  # run 0 warms up
                for jobs, (comp, deco) in runs.items():
                    enc, dec = _baseline(codec, x, jobs)
                    c0, w0 = time.process_time(), time.perf_counter()
                    blob = enc()
                    w1, c1 = time.perf_counter(), time.process_time()
                    raw = dec(blob)
                    w2, c2 = time.perf_counter(), time.process_time()
                    if raw != x.tobytes():
                        raise SystemExit(f"{codec}: round trip is not bit-exact")
                    if i:
                        comp.append({"s": w1 - w0, "cpu": 100 * (c1 - c0) / (w1 - w0)})
                        deco.append({"s": w2 - w1, "cpu": 100 * (c2 - c1) / (w2 - w1)})
                    sizes[jobs] = sum(map(len, blob)) if isinstance(blob, list) else len(blob)
            for jobs, (comp, deco) in runs.items():
                rows.append(_cli_row(codec, jobs, comp, deco, sizes[jobs] / x.nbytes))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n## {megabytes} MiB .npy, lmgc CLI --jobs N vs in-process baselines (best of {repeat})"
    )
    print("| codec | jobs | compress s | CPU % | decompress s | CPU % | size % | load |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(
            f"| {r['codec']} | {r['jobs']} | {r['compress']['s']:.2f} | {r['compress']['cpu']:.0f} "
            f"| {r['decompress']['s']:.2f} | {r['decompress']['cpu']:.0f} | "
            f"{100 * r['ratio']:.2f} | {r['load']} |"
        )
    for i in range(0, len(rows), 2):
        two, one = rows[i], rows[i + 1]
        print(
            f"{two['codec']}: 2 vs 1: compress x{one['compress']['s'] / two['compress']['s']:.2f}"
            f", decompress x{one['decompress']['s'] / two['decompress']['s']:.2f} (best of each)"
            f"; x{paired_speedup(two, one, 'compress'):.2f}"
            f", x{paired_speedup(two, one, 'decompress'):.2f} (median of back-to-back pairs)"
        )
    print(f"lmgc --jobs 1 and --jobs 2 outputs byte-identical: {same}")
    if not same:
        raise SystemExit("lmgc --jobs changed the output bytes")
    return rows


def main() -> None:
    warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")
    warnings.filterwarnings("ignore", message="Sending large graph")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prior", default=DEFAULTS["prior"]["name"], help="default: lmgc's default")
    ap.add_argument("--parts", default="zarr,dask,cli")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cli-mb", type=int, default=64)
    ap.add_argument(
        "--dask-rows",
        type=int,
        default=ZARR_SHAPE[0],
        help="rows (chunks of 1 MiB) of the Dask array; default: the Zarr shape's",
    )
    ap.add_argument("--json", help="Also write every measurement here.")
    ap.add_argument("--zarr-child", nargs=2, metavar=("CODEC", "MAX_WORKERS"), help="internal")
    args = ap.parse_args()
    if args.zarr_child:
        codec, workers = args.zarr_child
        print(json.dumps(zarr_child(codec, int(workers), args.prior, args.repeat)))
        return
    print(
        f"cores {os.cpu_count()}, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}, "
        f"prior {args.prior}, data {DATA.name} tiled [g, -g[::-1], ...]"
    )
    results: dict[str, Any] = {"prior": args.prior, "cores": os.cpu_count()}
    parts = args.parts.split(",")
    if "zarr" in parts:
        results["zarr"] = run_zarr(args.prior, args.repeat)
    if "dask" in parts:
        results["dask"] = run_dask(args.prior, args.repeat, args.dask_rows)
    if "cli" in parts:
        results["cli"] = run_cli(args.prior, args.repeat, args.cli_mb)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
