"""``mlt config``: show the resolved run config or its schema."""

from __future__ import annotations

import json

import click

from mlt.cli.options import config_options
from mlt.config import RunConfig, config_to_yaml


@click.command()
@click.option("--schema", is_flag=True, help="Print the JSON schema (every field, type, default).")
@config_options
def config(config: RunConfig, schema: bool) -> None:
    """Validate a run config and print it resolved, with defaults and KEY=VALUE overrides applied.

    Example: mlt config --config configs/demo.yaml pretrain.lr=0.02 windows.scales=[1,2,4]
    """
    if schema:
        click.echo(json.dumps(RunConfig.model_json_schema(), indent=2))
    else:
        click.echo(config_to_yaml(config), nl=False)
