"""Options shared by every command that takes a run config."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import click

from mlt.config import config_to_yaml, load_config


def config_options(func: Callable) -> Callable:
    """Returns ``func`` wrapped to take ``--config``, ``--print-config`` and ``KEY=VALUE`` overrides.

    The wrapped command receives the validated RunConfig as its ``config`` keyword argument;
    with ``--print-config`` it prints the resolved YAML and exits without running.
    """

    @click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), default=None,
        help="YAML run config (default: the built-in defaults).",
    )  # fmt: skip
    @click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
    @click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
    @functools.wraps(func)
    def wrapper(
        *args, config_path: str | None, print_config: bool, overrides: tuple[str, ...], **kwargs
    ):
        config = load_config(config_path, overrides)
        if print_config:
            click.echo(config_to_yaml(config), nl=False)
            return 0
        return func(*args, config=config, **kwargs)

    return wrapper


def progress_option(func: Callable) -> Callable:
    """Returns ``func`` with a ``--no-progress`` flag (passed on as ``no_progress``).

    The flag also turns off MLflow's artifact download bars, so a logged run prints only its lines.
    """

    @click.option("--no-progress", is_flag=True, help="No progress bars.")
    @functools.wraps(func)
    def wrapper(*args, no_progress: bool, **kwargs):
        if no_progress:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        return func(*args, no_progress=no_progress, **kwargs)

    return wrapper
