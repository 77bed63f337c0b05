"""``mlt data``: inspect, download and synthesise datasets."""

from __future__ import annotations

import json

import click

from mlt.cli.data_download import download


@click.group()
def data() -> None:
    """Inspect datasets on disk, download the public ones, write the synthetic demo data."""


@data.command()
@click.argument("root", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-images", is_flag=True, help="Do not open image files (sizes from annotations).")
@click.option(
    "--sample",
    type=int,
    default=None,
    help="Open at most N images for sizes; 0 = all (default: all for VOC, 2000 for source sets).",
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.pass_context
def inspect(
    ctx: click.Context,
    root: str,
    as_json: bool,
    no_images: bool,
    sample: int | None,
    no_progress: bool,
) -> None:
    """Detect the layout of ROOT and report its contents and every problem.

    Layouts: a VOC devkit folder (VOC2007, VOC2012, TinyVOC), a VOCdevkit folder holding several,
    Tiny-ImageNet, or ImageFolder / ILSVRC train (<split>/<wnid>/*.JPEG). Prints per-split image
    counts, per-class object (or image) counts with difficult/truncated counts, the image size
    range and every problem found. Exit code 1 when there are problems.
    """
    from pathlib import Path

    from mlt.data.inspect import inspect_dataset

    root_path = Path(root)
    reports = inspect_dataset(root_path, not no_images, not no_progress, sample)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        click.echo("\n\n".join(r.to_text() for r in reports))
    ctx.exit(0 if all(r.ok for r in reports) else 1)


@data.command()
@click.option("--dest", required=True, type=click.Path(path_type=str), help="Folder to write.")
@click.option("--seed", type=int, default=0, show_default=True, help="Generator seed.")
def synth(dest: str, seed: int) -> None:
    """Write the synthetic demo data under DEST (once): source set, target devkit, label map.

    A 10-class Tiny-ImageNet-layout source set of coloured textures, a 4-class VOC2007-format
    target whose objects wear the patterns of 8 of them, and the label map between the two.
    Prints the three paths; a second run with the same seed writes nothing.
    """
    from pathlib import Path

    from mlt.data.synthetic import make_demo_data

    for name, path in make_demo_data(Path(dest), seed).items():
        click.echo(f"{name}: {path}")


data.add_command(download)
