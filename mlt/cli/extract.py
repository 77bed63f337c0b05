"""``mlt extract``: cache the frozen trunk's window features of a target set in the feature store."""

from __future__ import annotations

import json

import click

from mlt.cli.options import config_options, progress_option
from mlt.config import RunConfig


@click.command()
@click.option("--trunk", "trunk_ref", required=True,
              help="The trunk: a checkpoint file, an MLflow run id of `mlt pretrain`, or runs:/… / models:/… URI.")  # fmt: skip
@click.option("--dataset", "dataset_root", type=click.Path(file_okay=False), default=None,
              help="VOC-format target set (default: data.target of the config).")  # fmt: skip
@click.option("--layer", "layers", multiple=True, type=click.Choice(["fc7", "fc6", "c5"]),
              help="Layer(s) to store (repeatable; default: extract.layers, fc7).")  # fmt: skip
@progress_option
@config_options
def extract(
    config: RunConfig,
    trunk_ref: str,
    dataset_root: str | None,
    layers: tuple[str, ...],
    no_progress: bool,
) -> None:
    """Extract the trunk's activations for every window of every target image into the store.

    ~500 square windows per image on the paper's grid (config `windows`), labelled by the
    paper's rule; features go into a content-addressed feature set (same trunk, grid,
    preprocessing, mode and dataset → same id → nothing recomputed). Work is spread over
    extract.workers Ray actors; an interrupted run resumes image by image. extract.mode=conv
    runs the convolutions once per image scale and ROI-pools each window (faster).

    Example: mlt extract --trunk runs/ckpt.pt --dataset ../shared/data/tinyvoc/TinyVOC --layer fc7
    """
    from mlt.extract import run_extract

    if layers:
        config.extract.layers = list(layers)
    summary = run_extract(config, trunk_ref, dataset_root, progress=not no_progress)
    if summary["skipped"]:
        click.echo(
            f"feature set {summary['feature_set']} already exists at {summary['path']}: nothing to do"
        )
    else:
        click.echo(
            f"feature set {summary['feature_set']}: {summary['images']:,} images, {summary['windows']:,} windows "
            f"in {summary['seconds']:.1f} s ({summary['windows'] / max(summary['seconds'], 1e-9):.0f} windows/s)"
        )
    click.echo(json.dumps(summary, indent=2))
