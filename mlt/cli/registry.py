"""``mlt promote``, ``mlt predict``, ``mlt ui``: the model registry and serving."""

from __future__ import annotations

import json
import re
import signal

import click

from mlt.cli.options import config_options
from mlt.config import RunConfig, config_to_yaml, load_config

#: A ``KEY=VALUE`` config override among predict's arguments (``eval.k=3``, ``tracking.uri=...``).
_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=")


@click.command()
@click.option("--run", "head_run", required=True,
              help="The head's MLflow run id (`mlt train-head`, or a sweep's best trial), evaluated on the gate's split.")  # fmt: skip
@click.option("--name", required=True, help="Registered model name (created when new).")
@click.option("--metric", default="test_mAP", show_default=True,
              help="Gate metric of the head run (higher is better), e.g. test_mAP, val_mAP.")  # fmt: skip
@click.option("--min-delta", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="How much the candidate must beat the champion by.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@config_options
def promote(
    config: RunConfig, head_run: str, name: str, metric: str, min_delta: float, as_json: bool
) -> int:
    """Register a head run's complete model; move @champion only when it beats the champion.

    The complete model is the head plus the trunk its feature set was extracted with, the
    window grid, k, the class names, input size and normalisation; it is logged into the
    head run as the MLflow model `complete_model` (signature, input example, lineage tags:
    trunk run, feature-set id, head run, dataset digest, git commit) and registered as a new
    version of NAME with alias @challenger. @champion moves to it when there is none yet or
    when METRIC beats the champion's strictly and by at least --min-delta; a tie keeps the
    champion. The decision and both figures are printed and written on the version (tags
    mlt.promotion.* and its description). Refused outright, with nothing registered: a head
    run whose lineage is incomplete (the missing tag is named; a trunk given as a checkpoint
    file has no trunk run), whose feature set fails verification, or without METRIC (run
    `mlt evaluate --head RUN` first). Exit code 0 when @champion moved, 1 when it stayed.

    \b
    Example: mlt promote --run 3f2a9c... --name tinyvoc --metric test_mAP --min-delta 0.005
    """
    from mlt.registry.promote import promote as run_promote

    decision = run_promote(config, head_run, name, metric, min_delta)
    click.echo(json.dumps(decision.to_dict(), indent=2) if as_json else decision.format())
    return 0 if decision.accepted else 1


def _split_args(args: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Returns (images, KEY=VALUE overrides): an argument is an override when it looks like one
    and is not an existing file."""
    from pathlib import Path

    images, overrides = [], []
    for a in args:
        (overrides if _OVERRIDE.match(a) and not Path(a).is_file() else images).append(a)
    return images, overrides


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--model", "model_uri", required=True,
              help="Registered model URI: models:/NAME@champion, models:/NAME/VERSION or runs:/RUN/complete_model.")  # fmt: skip
@click.option("--top", default=3, show_default=True, type=click.IntRange(min=0),
              help="How many top classes to list (and map).")  # fmt: skip
@click.option("--maps", "maps_dir", type=click.Path(file_okay=False), default=None,
              help="Write a score-map PNG overlay per top class of each image here.")  # fmt: skip
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML run config (default: the built-in defaults).")  # fmt: skip
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.argument("args", nargs=-1, metavar="IMAGE... [KEY=VALUE]...")
def predict(
    model_uri: str, top: int, maps_dir: str | None, config_path: str | None, print_config: bool,
    args: tuple[str, ...],
) -> None:  # fmt: skip
    """Score images with a registered complete model: one JSON line per image.

    Each line holds the image, its size, the number of windows, the score of every class (the
    power-k mean of the window probabilities, with the model's own grid and k) and the top
    classes; --maps adds score-map overlays. Images of any size and format Pillow reads. The
    model is resolved in the configured tracking store (tracking.uri, MLFLOW_TRACKING_URI, or
    the run folder's SQLite) and only there: its weights file is read weights-only, and
    file paths or other URIs are refused. KEY=VALUE arguments are config overrides.

    \b
    Examples:
      mlt predict --model models:/tinyvoc@champion photos/*.jpg --maps runs/maps
      mlt predict --model models:/tinyvoc/3 a.jpg tracking.uri=http://127.0.0.1:5000
    """
    from mlt.registry.predict import check_images, load_registered, predict_images

    images, overrides = _split_args(args)
    config = load_config(config_path, overrides)
    if print_config:
        click.echo(config_to_yaml(config), nl=False)
        return
    check_images(images)
    model = load_registered(config, model_uri)
    for out in predict_images(model, images, top, maps_dir):
        click.echo(json.dumps(out))


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but the loopback exposes the registry (warned).")  # fmt: skip
@click.option("--port", default=5000, show_default=True, type=click.IntRange(min=0, max=65535),
              help="Port (0: a free one).")  # fmt: skip
@config_options
def ui(config: RunConfig, host: str, port: int) -> None:
    """Start the MLflow UI and tracking server on the run folder's store (Ctrl-C stops it).

    Serves <run_dir>/mlflow.db (runs, the registry with its aliases and promotion history)
    and <run_dir>/mlartifacts. Point other commands at it with tracking.uri=URL or
    MLFLOW_TRACKING_URI=URL. Binds to 127.0.0.1 unless --host says otherwise.

    \b
    Example: mlt ui run_dir=runs --port 5000
    """
    from mlt import tracking
    from mlt.errors import InputError
    from mlt.registry.server import run_folder_store, start_server

    uri = tracking.tracking_uri(config)
    if not uri.startswith("sqlite:///"):
        raise InputError(None, "tracking.uri", tracking.redact(uri),
                         "the run folder's SQLite store (this one is already a server: open it)")  # fmt: skip
    backend, artifacts = run_folder_store(config.run_dir)
    server = start_server(backend, artifacts, host=host, port=port or None)
    if server.warning:
        click.echo(f"warning: {server.warning}", err=True)
    click.echo(f"MLflow UI for {config.run_dir} at {server.url} (log {server.log_path}); Ctrl-C stops it")  # fmt: skip

    def _stop(signum, frame):  # SIGTERM / SIGHUP: leave through `finally`, stopping the server
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
