"""``mlt evaluate``: score a trained head on a split — VOC AP, k comparison, localisation."""

from __future__ import annotations

import json

import click

from mlt.cli.options import config_options
from mlt.config import RunConfig


def _k(value: str | None) -> float | str | None:
    if value is None or value == "max":
        return value
    try:
        k = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected a number > 0 or 'max'") from None
    if k <= 0:
        raise click.BadParameter(f"{value!r}: expected a number > 0 or 'max'")
    return k


@click.command()
@click.option("--head", "head_ref", required=True,
              help="The head: the MLflow run id of `mlt train-head` / `mlt sweep`'s best trial, runs:/ID, or a head.pt file.")  # fmt: skip
@click.option("--split", default="test", show_default=True, help="VOC image set to score.")
@click.option("--dataset", "dataset_root", type=click.Path(file_okay=False), default=None,
              help="VOC root (default: the one the head's feature set was extracted from).")  # fmt: skip
@click.option("--k", "k", default=None, callback=lambda c, p, v: _k(v),
              help="Power of the window mean (default: the head's k); 'max' for the max.")  # fmt: skip
@click.option("--maps", "maps_dir", type=click.Path(file_okay=False), default=None,
              help="Write score-map PNG overlays here (one per present class).")  # fmt: skip
@click.option("--n-maps", default=8, show_default=True, type=click.IntRange(min=0),
              help="How many images get overlays.")  # fmt: skip
@click.option("--no-log", is_flag=True, help="Do not log into the head's MLflow run.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON only.")
@config_options
def evaluate(
    config: RunConfig, head_ref: str, split: str, dataset_root: str | None, k, maps_dir: str | None,
    n_maps: int, no_log: bool, as_json: bool,
) -> None:  # fmt: skip
    """Score a head on a split: per-class VOC AP (2007 11-point and area), mAP, localisation.

    Each image's class score is the paper's power mean over all its windows,
    score(C) = mean_i p(C|P_i)^k (also shown for k = 1 and max). Images labelled 0 in the VOC
    sense (difficult objects only) are ignored for that class. Pointing accuracy: the peak of a
    class's score map (each pixel averages the windows covering it) falls inside a box of that
    class, over the images holding the class. Metrics (<split>_mAP, <split>_ap_<class>, ...)
    are logged into the head's MLflow run.

    Example: mlt evaluate --head 3f2a9c... --split test --maps runs/maps
    """
    from mlt.heads.evaluation import run_evaluate

    summary = run_evaluate(
        config, head_ref, split, dataset_root, k, maps_dir, n_maps, log=not no_log
    )
    report = summary.pop("report")
    if not as_json:
        click.echo(report)
    click.echo(json.dumps(summary, indent=2))
