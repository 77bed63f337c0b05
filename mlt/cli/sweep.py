"""``mlt sweep``: train many FCa/FCb heads on a cached feature set and keep the best one."""

from __future__ import annotations

import json

import click

from mlt.cli.options import config_options, progress_option
from mlt.config import RunConfig


@click.command("sweep")
@click.option("--features", "fs_ref", required=True,
              help="Feature set: an id (or unique prefix) in extract.store, or its folder.")  # fmt: skip
@click.option("--space", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Search-space YAML (default: sweep.space, configs/sweeps/heads.yaml).")  # fmt: skip
@click.option("--layer", default="fc7", show_default=True, type=click.Choice(["fc7", "fc6"]),
              help="Layer of the set the heads read.")  # fmt: skip
@click.option("--batched/--tune", "batched", default=None,
              help="Train every head in-process in vectorised passes, or one Ray Tune trial per "
                   "head with ASHA (default: sweep.batched).")  # fmt: skip
@click.option("--dataset", "dataset_root", type=click.Path(file_okay=False), default=None,
              help="VOC root for split lists and labels (default: the set's own, from meta.json).")  # fmt: skip
@progress_option
@config_options
def sweep(
    config: RunConfig, fs_ref: str, space: str | None, layer: str, batched: bool | None,
    dataset_root: str | None, no_progress: bool,
) -> None:  # fmt: skip
    """Sweep head configurations on cached features; record every trial and the best head.

    The search space (--space) is a YAML file with one key per head.* field: a list is a grid
    axis (sweep.search=grid) or a choice (sweep.search=random, sweep.num_samples draws);
    {choice: [...]}, {uniform: [a, b]} and {loguniform: [a, b]} are also accepted for random
    search, and a single value is fixed for every trial. Fields the file leaves out come from
    the config's head section.

    Every head trains on head.train_split and is scored by validation mAP (power-k mean,
    eval.k) on head.val_split each epoch, with early stopping (head.patience). --tune runs one
    Ray Tune trial per configuration (1 CPU each, the windows shared through the object store,
    ASHA or FIFO per sweep.scheduler); --batched trains them in-process, many heads per
    vectorised pass (fastest on CPU). The sweep is a parent MLflow run with a child run per
    trial; the best child carries head/head.pt, so `mlt evaluate --head <best_run_id>` scores
    it on the test split.

    An interrupted sweep resumes when run again with the same inputs: finished trials are
    kept and only the missing ones train. A tracking server that goes away is retried for
    $MLT_TRACKING_RETRY_S seconds (default 300) before the sweep fails naming it.

    \b
    Example:
      mlt sweep --features 50ac6677 --space configs/sweeps/heads.yaml \\
          --config configs/cpu.yaml head.epochs=8
    """
    from mlt.sweep import run_sweep

    summary = run_sweep(
        config, fs_ref, layer, space, batched, dataset_root, progress=not no_progress
    )
    click.echo(summary.pop("table"))
    click.echo(json.dumps(summary, indent=2, default=str))
