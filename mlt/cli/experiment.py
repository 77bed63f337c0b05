"""``mlt experiment``: run a results experiment and write its section of docs/RESULTS.md."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from mlt.cli.options import progress_option


@click.command()
@click.argument("name")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--out", type=click.Path(file_okay=False), default="docs/results", show_default=True,
              help="Folder for the sections (NAME.md) and their PNG plots.")  # fmt: skip
@click.option("--results", type=click.Path(dir_okay=False), default="docs/RESULTS.md",
              show_default=True, help="The joined report, rewritten after each experiment.")  # fmt: skip
@click.option("--prune", is_flag=True,
              help="Free disk after each arm: delete its materialised feature cache.")  # fmt: skip
@click.option("--arm", "arms", multiple=True,
              help="Run only this arm (repeatable); the others appear when already finished.")  # fmt: skip
@click.option("--existing", is_flag=True,
              help="Run nothing: render the tables of what has finished, in the tracking store or the record OUT/NAME.json (missing arms/seeds left out).")  # fmt: skip
@progress_option
def experiment(name: str, overrides: tuple[str, ...], out: str, results: str, prune: bool,
               arms: tuple[str, ...], existing: bool, no_progress: bool) -> None:  # fmt: skip
    """Run experiment NAME (configs/experiments/NAME.yaml; `all` runs every one, `list` lists them).

    Each arm pretrains (or finds) its trunk, extracts (or finds) its feature set, trains a head
    per seed on train with every choice on val, and scores it on test; stages already done are
    reused, so an interrupted experiment resumes and a finished one re-renders in seconds. The
    section (tables, PNG plots, the command, its compute and render times) goes to OUT/NAME.md
    and RESULTS is re-assembled from OUT. KEY=VALUE overrides apply to every arm, e.g. another
    VOC-format target, reported outside docs/:
    mlt experiment transfer data.target=/data/OtherVOC --out runs/other --results runs/other/RESULTS.md

    Example: mlt experiment source-classes
    """
    from mlt.experiments import registry

    if name == "list":
        for spec_name, title in registry.titles().items():
            click.echo(f"{spec_name:16s} {title}")
        return
    names = registry.ordered_names() if name == "all" else [name]
    for spec_name in names:
        command = shlex.join(["mlt", "experiment", spec_name, *overrides])
        path = registry.run_experiment(spec_name, overrides, Path(out), Path(results), prune,
                                       not no_progress, click.echo, command, arms, existing)  # fmt: skip
        click.echo(f"wrote {path} and {results}")
