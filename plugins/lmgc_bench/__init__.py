"""The benchmark harness: ``lmgc collect`` (train small models, store gradient snapshots in Zarr)
and ``lmgc bench`` (a grid of lmgc pipelines and classical codecs over those gradients).

This plugin only adds CLI commands (the ``register_commands`` hook). torch, scikit-learn, zarr,
matplotlib and the codecs are imported inside the commands, so ``lmgc --help`` stays fast.
"""

from __future__ import annotations

from typing import Any

from lmgc_core.components.hookspecs import hookimpl

DEFAULT_OUT = "bench-out"
DEFAULT_ZARR = "bench-out/grads.zarr"


@hookimpl
def register_commands(cli: Any) -> None:
    import click

    @cli.command("collect")
    @click.option(
        "--out", default=DEFAULT_ZARR, show_default=True, help="Zarr store to write (or extend)."
    )
    @click.option(
        "--arch", "archs", multiple=True, show_default=True,
        default=("convnet", "vgg", "resnet18", "vit"),
        type=click.Choice(["convnet", "vgg", "resnet18", "vit", "mlp"]),
        help="Architecture(s) to train; repeat the option for several.",
    )  # fmt: skip
    @click.option("--steps", default=200, show_default=True, type=click.IntRange(min=1),
                  help="Training steps per model.")  # fmt: skip
    @click.option("--every", default=50, show_default=True, type=click.IntRange(min=1),
                  help="Snapshot every N steps.")  # fmt: skip
    @click.option("--image-size", default=16, show_default=True, type=click.IntRange(min=1),
                  help="Digits upsampled to NxN.")  # fmt: skip
    @click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
    @click.option("--lr", default=1e-3, show_default=True, help="Adam learning rate.",
                  type=click.FloatRange(min=0, min_open=True))  # fmt: skip
    @click.option("--seed", default=0, show_default=True)
    @click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
                  help="torch CPU threads.")  # fmt: skip
    def collect_cmd(out: str, archs: tuple[str, ...], **kw: Any) -> None:
        """Train small ConvNet / VGG / ResNet-18 / ViT models on scikit-learn's digit images and
        save float32 gradient snapshots (with layer metadata) to a Zarr store."""
        from .collect import collect

        collect(out, archs, log=click.echo, **kw)
        click.echo(f"wrote {out}")

    @cli.command("bench")
    @click.option(
        "--config", "config", default="small.yaml", show_default=True,
        help="YAML grid; a bare name is also looked up among the packaged configs.",
    )  # fmt: skip
    @click.option(
        "--zarr", "zarr_path", default=None,
        help=f"Gradient store from `lmgc collect` [config's, else {DEFAULT_ZARR}].",
    )  # fmt: skip
    @click.option("--out", "out_dir", default=None, help="Output folder [config's 'output'].")
    @click.option("--fresh", is_flag=True, help="Ignore cached cells and run everything again.")
    @click.option("--no-progress", is_flag=True, help="No progress bar.")
    def bench_cmd(
        config: str, zarr_path: str | None, out_dir: str | None, fresh: bool, no_progress: bool
    ) -> None:
        """Run a benchmark grid: lmgc (serializer x prior x window x stage) against gzip, lzma,
        zstd, PNG, FLAC, fpzip, pcodec, Blosc2 and byte-plane zstd on the same bytes, every
        codec round-tripped. Writes results.md, summary.csv, cells.csv and plots/*.png."""
        from .grid import bench

        try:
            paths = bench(
                config, out_dir=out_dir, zarr_path=zarr_path, fresh=fresh,
                progress=not no_progress, log=click.echo,
            )  # fmt: skip
        except (FileNotFoundError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        for name, path in paths.items():
            if not name.startswith("plot_"):
                click.echo(f"{name}: {path}")
        n_plots = sum(1 for n in paths if n.startswith("plot_"))
        if n_plots:
            click.echo(f"plots: {n_plots} PNG files in {paths['markdown'].parent / 'plots'}")
