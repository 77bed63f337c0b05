"""``mlt data download``: fetch and unpack an official dataset archive set."""

from __future__ import annotations

from pathlib import Path

import click

from mlt.data.download import (
    DATASETS,
    DESCRIPTIONS,
    MIRROR_ENV,
    dataset_size,
    fetch_dataset,
    human_size,
)


def _dataset_table() -> str:
    lines = []
    for name in sorted(DATASETS):
        archives = DATASETS[name]
        n = len(archives)
        size = human_size(dataset_size(name))
        what = DESCRIPTIONS.get(name, "")
        count = f"in {n} archive{'s' if n > 1 else ''}"
        lines.append(f"  {name:<14} {size:>8} {count:<13} {what}")
    return "\n".join(lines)


_HELP = f"""Download DATASET and unpack it under DEST in its standard layout.

\b
Datasets:
{_dataset_table()}

\b
Where they land:
  tiny-imagenet  DEST/tiny-imagenet-200/
  voc2007        DEST/VOCdevkit/VOC2007/  (trainval and test merged)
  voc2012        DEST/VOCdevkit/VOC2012/

Archives are kept in DEST/downloads/ (unless --delete-archives). Interrupted downloads resume
where they stopped when the command is run again, and dropped connections are retried and
resumed. Every archive's MD5 and size are checked before it is used; a mismatch removes the
download and stops with an error. Unpacking refuses unsafe member paths and is marked complete
only when done, so running the command again is safe and skips what is already in place.

--mirror (or ${MIRROR_ENV}) replaces the host and folder of the official URLs, keeping the file
names: e.g. --mirror http://mirror.example/datasets fetches
http://mirror.example/datasets/VOCtest_06-Nov-2007.tar. A local folder holding the archives works
too.
"""


@click.command("download", help=_HELP, short_help="Download and unpack a dataset (resumable).")
@click.argument("dataset", type=click.Choice(sorted(DATASETS)), metavar="DATASET")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="Folder to unpack into; archives go to DEST/downloads/.",
)
@click.option(
    "--mirror",
    metavar="URL",
    default=None,
    help=f"Fetch the archives from this base URL or local folder instead (default: ${MIRROR_ENV}).",
)
@click.option("--no-progress", is_flag=True, help="No progress bars or per-archive messages.")
@click.option(
    "--delete-archives",
    is_flag=True,
    help="Delete each archive once unpacked (a later run cannot re-verify it).",
)
def download(
    dataset: str, dest: Path, mirror: str | None, no_progress: bool, delete_archives: bool
) -> None:
    root = fetch_dataset(
        dataset,
        dest,
        base_url=mirror,
        progress=not no_progress,
        keep_archives=not delete_archives,
    )
    click.echo(f"{dataset}: ready at {root}")


__all__ = ["download"]
