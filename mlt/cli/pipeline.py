"""``mlt pipeline`` and ``mlt demo``: every stage in order from one run config."""

from __future__ import annotations

import json

import click

from mlt.cli.options import config_options, progress_option
from mlt.config import RunConfig
from mlt.pipeline import STAGES


@click.command()
@click.option("--stage", "stages", multiple=True, type=click.Choice(STAGES),
              help="Run only these stages (repeatable; default: all, in order).")  # fmt: skip
@click.option("--trunk", default=None, help="Trunk run id or checkpoint when pretrain is not run.")
@click.option("--features", default=None, help="Feature-set id when extract is not run.")
@click.option(
    "--model-name", default=None, help="Registered model name (default: mlt-<config name>)."
)
@progress_option
@config_options
def pipeline(config: RunConfig, stages, trunk, features, model_name, no_progress) -> None:
    """Run pretrain → extract → sweep → evaluate → promote from one config.

    A stage whose outputs exist for the same inputs is skipped and says so: the finished
    pretraining run of the same source and settings, the feature set of the same id, the
    finished sweep of the same set, head settings and space, a head run already scored on
    test, a head run already registered. Runs on the Ray at $RAY_ADDRESS or a local one;
    MLflow at $MLFLOW_TRACKING_URI or SQLite in the run folder.

    Example: mlt pipeline --config configs/cpu.yaml --stage sweep --stage evaluate --features 50ac6677
    """
    from mlt.pipeline import run_pipeline

    out = run_pipeline(
        config, stages or STAGES, trunk, features, model_name, not no_progress, click.echo
    )
    click.echo(json.dumps({k: v for k, v in out.items() if k != "sweep"}, indent=2, default=str))


@click.command()
@progress_option
@config_options
def demo(config: RunConfig, no_progress: bool) -> None:
    """The whole pipeline on a small config (what `make demo` runs), then a summary.

    Uses the config's data (../shared/data) when present, else $MLT_DATA, else generates a
    small synthetic source set and VOC-format target set in the run folder, and says which.
    Ends with the test mAP, where the runs and feature sets are, the champion model and how to
    open the MLflow UI.

    Example: mlt demo --config configs/demo.yaml
    """
    from mlt.demo import resolve_data, summary_text
    from mlt.pipeline import run_pipeline

    config, data_line = resolve_data(config)
    click.echo(f"mlt demo — {data_line}")
    out = run_pipeline(config, STAGES, progress=not no_progress, echo=click.echo)
    click.echo(summary_text(config, out, data_line))
