"""``mlt features``: list, show, verify and garbage-collect the feature sets of a store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from featurestore import FeatureStore, lineage

STORE_ENV = "MLT_FEATURE_STORE"
DEFAULT_STORE = "runs/features"

store_option = click.option(
    "--store", "store_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help=f"Feature store folder (default: ${STORE_ENV}, else {DEFAULT_STORE}).",
)  # fmt: skip


def _store(store_dir: Path | None) -> FeatureStore:
    """Returns the store named by --store, $MLT_FEATURE_STORE or the default."""
    return FeatureStore(store_dir or Path(os.environ.get(STORE_ENV) or DEFAULT_STORE))


def human_bytes(n: int) -> str:
    """Returns ``n`` bytes as a short text such as ``"1.5 GiB"``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _short(value: object, n: int = 12) -> str:
    """Returns a digest or run id shortened for a table: no ``sha256:`` prefix, ``n`` chars."""
    return "-" if value is None else str(value).rsplit(":", 1)[-1][:n]


@click.group()
def features() -> None:
    """Inspect the feature store: cached window features of target sets, one folder per set.

    A set's id is a hash of what determines its features (trunk weights, layers, window grid,
    preprocessing, mode, dataset, extractor version): the same inputs are never extracted twice.
    """


@features.command("list")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
def list_cmd(store_dir: Path | None, as_json: bool) -> None:
    """List the complete and partial feature sets: id, created, counts, layers, size, trunk, dataset.

    Partial sets are being written (a live writer pid) or were interrupted (resumable, or
    removed by `mlt features gc`).
    """
    store = _store(store_dir)
    entries = store.list()
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    if not entries:
        click.echo(f"no feature sets in {store.root}")
        return
    click.echo(
        f"{'id':<16}  {'status':<14}  {'created':<20}  {'images':>7}  {'windows':>9}  {'size':>10}  layers / lineage"
    )
    for e in entries:
        if e.complete:
            status = "complete"
        elif e.problem:
            status = "unreadable"
        else:
            status = f"writing ({e.writer_pid})" if e.writer_pid else "partial"
        layers = ",".join(f"{k}:{v}" for k, v in e.layers.items())
        trunk = _short(e.lineage.get("trunk_run") or e.lineage.get("trunk_digest"))
        dataset = _short(e.lineage.get("dataset_digest"))
        tail = f"{layers}  trunk {trunk}  dataset {dataset}" if e.complete else (e.problem or "")
        images = "" if e.images is None else e.images
        windows = "" if e.windows is None else e.windows
        click.echo(
            f"{e.id:<16}  {status:<14}  {e.created or '':<20}  {images:>7}  {windows:>9}  "
            f"{human_bytes(e.size_bytes):>10}  {tail}"
        )


@features.command()
@click.argument("set_id", metavar="ID")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print meta.json as it is.")
def show(set_id: str, store_dir: Path | None, as_json: bool) -> None:
    """Show a feature set (ID or a unique prefix): lineage, layers, counts per label and split.

    Lineage: the trunk weights digest and training run, the dataset digest, the window grid,
    preprocessing and mode, and the MLflow run that produced the set.
    """
    fs = _store(store_dir).open(set_id)
    meta = fs.meta
    if as_json:
        click.echo(json.dumps(meta, indent=2, sort_keys=True))
        return
    counts = meta["counts"]
    raw = counts["windows"] * sum(fs.layers.values()) * 2
    disk = fs.disk_bytes()
    fields: dict[str, object] = {"created": meta.get("created"), "format": meta["format_version"]}
    fields.update(lineage(meta))
    fields.update({k: v for k, v in sorted(meta.get("info", {}).items()) if k != "trunk_run"})
    fields["layers"] = (
        ", ".join(f"{k} ({v} dims)" for k, v in fs.layers.items()) + f", {meta['dtype']}"
    )
    fields["images"] = counts["images"]
    fields["windows"] = counts["windows"]
    fields["size on disk"] = human_bytes(disk) + (
        f" ({disk / raw:.3f}x the raw float16 bytes)" if raw else ""
    )
    fields["per split"] = ", ".join(
        f"{s}: {c['images']} images, {c['windows']} windows" for s, c in counts["per_split"].items()
    )
    fields["per label"] = ", ".join(f"{label}: {n}" for label, n in counts["per_label"].items())
    click.echo(f"feature set {fs.id}  ({fs.path})")
    width = max(map(len, fields)) + 2
    for key, value in fields.items():
        shown = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
        click.echo(f"  {key:<{width}}{'-' if shown is None else shown}")


@features.command()
@click.argument("set_id", metavar="ID")
@store_option
@click.pass_context
def verify(ctx: click.Context, set_id: str, store_dir: Path | None) -> None:
    """Check every value's checksum and the counts against the manifest and meta.json.

    Prints each problem naming the image and layer; exit code 1 when there is any.
    """
    fs = _store(store_dir).open(set_id)
    problems = fs.verify()
    for p in problems:
        click.echo(p)
    if problems:
        bad = {p.image_id for p in problems if p.image_id is not None}
        click.echo(f"{fs.id}: {len(problems)} problems ({len(bad)} bad images)", err=True)
        ctx.exit(1)
    c = fs.meta["counts"]
    click.echo(
        f"{fs.id}: ok ({c['images']} images, {c['windows']} windows, layers {', '.join(fs.layers)})"
    )


@features.command()
@store_option
@click.option(
    "--keep",
    multiple=True,
    metavar="ID",
    help="Complete set to keep; when given, every other complete set is removed. Repeatable.",
)
@click.option("--dry-run", is_flag=True, help="Print what would be removed, remove nothing.")
def gc(store_dir: Path | None, keep: tuple[str, ...], dry_run: bool) -> None:
    """Remove partial sets that no live writer holds; with --keep, also every complete set not kept.

    Without --keep complete sets are never touched. Interrupted extractions resume from their
    partial set, so collect partial sets only for extractions you will not run again.
    """
    store = _store(store_dir)
    removed = store.gc(keep=keep or None, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for path in removed:
        click.echo(f"{verb} {path}")
    click.echo(f"{verb} {len(removed)} folders from {store.root}")
