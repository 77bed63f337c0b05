"""The ``mlt`` command line: one group, a module per command family."""

from __future__ import annotations

import logging
import sys

import click

from featurestore.errors import FeatureStoreError
from mlt import __version__
from mlt.errors import MltError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlt")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """mlt: mid-level transfer of CNN features (Oquab et al., CVPR 2014).

    Pretrain a trunk on a source set, cache window features of a target set, train and sweep
    heads on the cache, evaluate, promote and serve the best model.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    from mlt.cli import config as config_cmd
    from mlt.cli import data as data_cmd
    from mlt.cli import evaluate as evaluate_cmd
    from mlt.cli import experiment as experiment_cmd
    from mlt.cli import extract as extract_cmd
    from mlt.cli import features as features_cmd
    from mlt.cli import heads as heads_cmd
    from mlt.cli import pipeline as pipeline_cmd
    from mlt.cli import pretrain as pretrain_cmd
    from mlt.cli import registry as registry_cmd
    from mlt.cli import submit as submit_cmd
    from mlt.cli import sweep as sweep_cmd
    from mlt.cli import windows as windows_cmd

    cli.add_command(data_cmd.data)
    cli.add_command(windows_cmd.windows)
    cli.add_command(config_cmd.config)
    cli.add_command(pretrain_cmd.pretrain)
    cli.add_command(extract_cmd.extract)
    cli.add_command(features_cmd.features)
    cli.add_command(heads_cmd.train_head)
    cli.add_command(sweep_cmd.sweep)
    cli.add_command(evaluate_cmd.evaluate)
    cli.add_command(submit_cmd.submit)
    cli.add_command(submit_cmd.jobs)
    cli.add_command(registry_cmd.promote)
    cli.add_command(registry_cmd.predict)
    cli.add_command(registry_cmd.ui)
    cli.add_command(pipeline_cmd.pipeline)
    cli.add_command(pipeline_cmd.demo)
    cli.add_command(experiment_cmd.experiment)


_register()


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the exit code (MltError → a one-line message and exit code 2)."""
    try:
        rv = cli.main(args=argv, prog_name="mlt", standalone_mode=False)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except (MltError, FeatureStoreError) as e:
        click.echo(f"error: {e}", err=True)
        return 2
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
