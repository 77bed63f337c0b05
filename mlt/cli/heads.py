"""``mlt train-head``: train an FCa/FCb head on a cached feature set."""

from __future__ import annotations

import json

import click

from mlt.cli.options import config_options, progress_option
from mlt.config import RunConfig


@click.command("train-head")
@click.option("--features", "fs_ref", required=True,
              help="Feature set: an id (or unique prefix) in extract.store, or its folder.")  # fmt: skip
@click.option("--layer", default="fc7", show_default=True, type=click.Choice(["fc7", "fc6", "c5"]),
              help="Layer of the set the head reads (c5 with head.unfreeze=fc6 or fc6+fc7).")  # fmt: skip
@click.option("--dataset", "dataset_root", type=click.Path(file_okay=False), default=None,
              help="VOC root for split lists and labels (default: the set's own, from meta.json).")  # fmt: skip
@progress_option
@config_options
def train_head(
    config: RunConfig, fs_ref: str, layer: str, dataset_root: str | None, no_progress: bool
) -> None:
    """Train one FCa/FCb head from cached features only; keep the best epoch by validation mAP.

    Trains on head.train_split images (every positive window and head.background_fraction of
    the background, redrawn each epoch unless head.resample_background=false), scores every
    window of head.val_split images after each epoch (power-k mean, eval.k) and stops after
    head.patience epochs without improvement. The run goes to MLflow with lineage tags and the
    artifact head/head.pt; `mlt evaluate --head RUN_ID` scores it on the test split.

    Example: mlt train-head --features 50ac6677 --config configs/cpu.yaml head.lr=0.005
    """
    from mlt.heads.run import run_train_head

    summary = run_train_head(config, fs_ref, layer, dataset_root, progress=not no_progress)
    click.echo(summary.pop("table"))
    click.echo(json.dumps(summary, indent=2))
