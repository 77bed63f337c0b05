"""``mlt windows``: draw an image's window grid coloured by label and count the labels."""

from __future__ import annotations

from pathlib import Path

import click

from mlt.cli.options import config_options
from mlt.config import RunConfig


@click.command()
@click.argument("image_id")
@click.option(
    "--dataset",
    "dataset_root",
    required=True,
    type=click.Path(file_okay=False),
    help="VOC-format devkit folder (e.g. TinyVOC).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="PNG to write (default: runs/windows/<IMAGE_ID>.png).",
)
@click.option("--scale", type=int, default=3, show_default=True, help="Upscaling of the drawing.")
@config_options
def windows(
    image_id: str, dataset_root: str, out: str | None, scale: int, config: RunConfig
) -> None:
    """Write a PNG of IMAGE_ID's window grid coloured by label; print window counts per label.

    The grid and labelling rule come from the config's `windows` section (override with e.g.
    windows.stride_fraction=0.25 or windows.scales=[1,2,4]). Labels: a class when the window
    holds one object (|P∩B| ≥ 0.2|P| and ≥ 0.6|B|), dropped when it qualifies for several (or only
    for a difficult one), background otherwise.
    """
    from PIL import Image

    from mlt.data.voc import VocDataset
    from mlt.windows import image_rng, label_counts, label_windows, training_mask, window_grid
    from mlt.windows_draw import draw_windows

    wc = config.windows
    ds = VocDataset(Path(dataset_root))
    ann = ds.annotation(image_id)
    grid = window_grid(ann.width, ann.height, tuple(wc.scales), wc.stride_fraction)
    labels = label_windows(
        grid.boxes, ann.boxes(), ann.class_indices(ds.classes), ds.num_classes,
        difficult=ann.difficult(), window_fraction=wc.window_fraction, box_fraction=wc.box_fraction,
    )  # fmt: skip
    keep = training_mask(
        labels, ds.num_classes, wc.background_fraction, image_rng(wc.seed, image_id)
    )
    with Image.open(ds.image_path(image_id, ann.filename)) as im:
        image = im.convert("RGB")
    drawing = draw_windows(
        image,
        grid.boxes,
        labels,
        list(ds.classes),
        ann.boxes(),
        [o.name for o in ann.objects],
        scale=scale,
    )
    out_path = Path(out) if out else Path("runs") / "windows" / f"{image_id}.png"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    drawing.save(out_path)

    click.echo(
        f"{image_id}: {ann.width}x{ann.height}, {len(ann.objects)} objects, {len(grid)} windows over {len(wc.scales)} scales"
    )
    for name, n in label_counts(labels, list(ds.classes)).items():
        if n:
            click.echo(f"  {name:<24} {n:>6}")
    click.echo(
        f"  kept for training: {int(keep.sum())} (all positives + {wc.background_fraction:.0%} of background)"
    )
    click.echo(f"wrote {out_path}")
