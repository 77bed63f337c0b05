"""``mlt pretrain``: train the trunk on a source set under Ray Train."""

from __future__ import annotations

import json

import click

from mlt.cli.options import config_options
from mlt.config import RunConfig


@click.command()
@click.option("--resume", type=click.Choice(["auto", "never"]), default="auto", show_default=True,
              help="auto: continue the run of the same name in the run folder from its last checkpoint; "
                   "never: discard it and start over.")  # fmt: skip
@click.option("--no-register", is_flag=True, help="Do not log/register the final trunk in MLflow.")
@config_options
def pretrain(config: RunConfig, resume: str, no_register: bool) -> None:
    """Pretrain the trunk (C1..C5, FC6, FC7, FC8) on the source set or a class subset of it.

    Ray Train DDP on pretrain.workers workers (gloo on CPU, NCCL on GPU), DALI or reference
    input (pretrain.loader), SGD with momentum and the paper's ÷10-on-plateau schedule,
    a checkpoint every epoch; a killed worker restarts from the last one. Runs on the Ray at
    $RAY_ADDRESS or an embedded local one; MLflow at $MLFLOW_TRACKING_URI or SQLite in the run
    folder. The final trunk is registered as trunk-<name>.

    Example: mlt pretrain --config configs/demo.yaml pretrain.epochs=2 data.subset.kind=related
    """
    from mlt.train.pretrain import run_pretrain

    summary = run_pretrain(config, resume=resume, register=not no_register)
    m = summary["metrics"]
    click.echo(
        f"pretrained {config.pretrain.model} on {summary['classes']} classes for {summary['epochs']} epochs: "
        f"val top-1 {m.get('val_top1', float('nan')):.3f}, top-5 {m.get('val_top5', float('nan')):.3f}"
    )
    click.echo(
        json.dumps(
            {k: summary[k] for k in ("run_id", "model_uri", "trunk_digest", "checkpoint")}, indent=2
        )
    )
