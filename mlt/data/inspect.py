"""``mlt data inspect``: detect a dataset's layout, count what is in it, list every problem.

Works on a VOC devkit folder (``VOC2007``, ``VOC2012``, TinyVOC), a ``VOCdevkit`` folder
holding several, Tiny-ImageNet and ImageFolder/ILSVRC-train layouts. Problems are collected,
not raised, so one run lists them all.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from mlt.data import source as source_sets
from mlt.data import voc
from mlt.errors import InputError, SkipLog

VOC_LAYOUT = "voc"


@dataclass
class Report:
    """What ``inspect`` found: counts per split and class, image sizes, and problems."""

    root: Path
    layout: str
    splits: dict[str, int] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    per_class: dict[str, dict[str, int]] = field(default_factory=dict)
    sizes: tuple[int, int, int, int] | None = None  # min w, max w, min h, max h
    sizes_checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Returns True when no problem was found."""
        return not self.problems

    def to_dict(self) -> dict:
        """Returns the report as JSON-serialisable data."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "splits": self.splits,
            "classes": self.per_class,
            "num_classes": len(self.per_class),
            "image_size": None
            if self.sizes is None
            else dict(
                zip(("min_width", "max_width", "min_height", "max_height"), self.sizes, strict=True)
            ),
            "images_size_checked": self.sizes_checked,
            "problems": self.problems,
            "notes": self.notes,
        }

    def to_text(self, max_problems: int = 50) -> str:
        """Returns the report as an aligned plain-text block."""
        out = [f"{self.root}  [{self.layout}]"]
        out.append("splits: " + ", ".join(f"{k} {v:,} images" for k, v in self.splits.items()))
        out.append(f"classes: {len(self.per_class)}")
        if self.per_class:
            width = max(len(c) for c in self.per_class)
            head = " ".join(f"{c:>14}" for c in self.columns)
            out.append(f"  {'class':<{width}} {head}")
            for cls, row in self.per_class.items():
                cells = " ".join(f"{row.get(c, 0):>14,}" for c in self.columns)
                out.append(f"  {cls:<{width}} {cells}")
        if self.sizes:
            w0, w1, h0, h1 = self.sizes
            out.append(
                f"image size: width {w0}..{w1}, height {h0}..{h1} ({self.sizes_checked:,} images read)"
            )
        out.extend(f"note: {n}" for n in self.notes)
        if self.problems:
            out.append(f"problems: {len(self.problems)}")
            out.extend(f"  - {p}" for p in self.problems[:max_problems])
            if len(self.problems) > max_problems:
                out.append(f"  ... and {len(self.problems) - max_problems} more (see --json)")
        else:
            out.append("problems: none")
        return "\n".join(out)


def detect_layout(root: Path) -> str | None:
    """Returns "voc", "vocdevkit", "tiny-imagenet", "imagefolder" or None for an unknown folder."""
    root = Path(root)
    if (root / "Annotations").is_dir() and (root / "ImageSets").is_dir():
        return VOC_LAYOUT
    if any((p / "Annotations").is_dir() for p in _subdirs(root)):
        return "vocdevkit"
    return source_sets.detect_source_layout(root)


def _subdirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def inspect_dataset(
    root: Path, check_images: bool = True, progress: bool = True, sample: int | None = None
) -> list[Report]:
    """Returns one Report per dataset found at ``root`` (a VOCdevkit folder may hold several).

    ``sample`` limits how many image files are opened to read their sizes: None means all for
    VOC sets and 2,000 for (much larger) source sets; 0 means all.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(root, None, str(root), "an existing dataset folder", kind="missing folder")
    layout = detect_layout(root)
    if layout == VOC_LAYOUT:
        return [inspect_voc(root, check_images, progress, sample)]
    if layout == "vocdevkit":
        return [
            inspect_voc(p, check_images, progress, sample)
            for p in _subdirs(root)
            if detect_layout(p) == VOC_LAYOUT
        ]
    if layout in ("tiny-imagenet", "imagefolder"):
        return [
            inspect_source(root, layout, check_images, progress, 2000 if sample is None else sample)
        ]
    raise InputError(
        root, "layout", sorted(p.name for p in _subdirs(root))[:10],
        "a VOC devkit (Annotations/, ImageSets/, JPEGImages/), Tiny-ImageNet (wnids.txt, train/) "
        "or ImageFolder (<split>/<class>/*.JPEG) folder", kind="unknown layout",
    )  # fmt: skip


def _image_size(path: Path) -> tuple[int, int]:
    """Returns (width, height) from the image header; raises InputError for unreadable files."""
    try:
        with Image.open(path) as im:
            if im.size[0] < 1 or im.size[1] < 1:
                raise InputError(path, "size", im.size, "a non-empty image", kind="bad image")
            return im.size
    except FileNotFoundError:
        raise InputError(path, None, str(path), "an existing image", kind="missing image") from None
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(
            path, None, type(e).__name__, "a readable JPEG/PNG image", kind="bad image"
        ) from None


def _pick(items: list, sample: int | None, seed: int = 0) -> list:
    if not sample or len(items) <= sample:
        return items
    return random.Random(seed).sample(items, sample)


def inspect_voc(
    root: Path, check_images: bool = True, progress: bool = True, sample: int | None = None
) -> Report:
    """Returns the Report of one VOC-format devkit folder."""
    report = Report(root, VOC_LAYOUT)
    classes = voc.discover_classes(root)
    if not classes:
        report.problems.append(
            f"{root / 'ImageSets/Main'}: no <class>_<split>.txt lists; assuming the 20 VOC classes"
        )
        classes = list(voc.VOC_CLASSES)
    report.notes.append(f"classes from ImageSets/Main: {', '.join(classes)}")
    split_ids: dict[str, list[str]] = {}
    for split in voc.SPLITS:
        if not (root / "ImageSets" / "Main" / f"{split}.txt").exists():
            continue
        try:
            split_ids[split] = voc.read_split_ids(root, split)
        except InputError as e:
            report.problems.append(str(e))
    report.splits = {s: len(ids) for s, ids in split_ids.items()}
    _check_split_union(report, split_ids)

    skip = SkipLog(enabled=True)
    dataset = voc.VocDataset(root, tuple(classes), skip)
    count_splits = [s for s in ("trainval", "test") if s in split_ids] or list(split_ids)
    report.columns = [
        f"{s} {col}"
        for s in count_splits
        for col in ("images", "objects", "difficult", "truncated")
    ]
    per_class: dict[str, Counter] = {c: Counter() for c in classes}
    anns: dict[str, voc.VocAnnotation] = {}
    all_ids = sorted({i for ids in split_ids.values() for i in ids})
    for image_id in tqdm(
        all_ids, desc=f"annotations {root.name}", disable=not progress, unit="img"
    ):
        try:
            anns[image_id] = dataset.annotation(image_id)
        except InputError as e:
            report.problems.append(str(e))
    for split in count_splits:
        for image_id in split_ids[split]:
            ann = anns.get(image_id)
            if ann is None:
                continue
            for cls in {o.name for o in ann.objects}:
                per_class[cls][f"{split} images"] += 1
            for o in ann.objects:
                per_class[o.name][f"{split} objects"] += 1
                per_class[o.name][f"{split} difficult"] += o.difficult
                per_class[o.name][f"{split} truncated"] += o.truncated
    report.per_class = {c: dict(per_class[c]) for c in classes}
    report.problems.extend(str(e) for e in skip.errors)
    for ann_id, ann in anns.items():
        if not ann.objects:
            report.notes.append(f"{ann_id}: no objects")
    _check_class_lists(report, dataset, split_ids, anns)
    if check_images:
        _check_voc_images(report, dataset, anns, progress, sample)
    else:
        _size_range(report, [(a.width, a.height) for a in anns.values()], 0)
    return report


def _check_split_union(report: Report, split_ids: dict[str, list[str]]) -> None:
    if {"train", "val", "trainval"} <= split_ids.keys():
        train, val, trainval = (set(split_ids[s]) for s in ("train", "val", "trainval"))
        if train & val:
            report.problems.append(
                f"{len(train & val)} ids are in both train and val, e.g. {sorted(train & val)[0]}"
            )
        if train | val != trainval:
            diff = sorted((train | val) ^ trainval)
            report.problems.append(
                f"trainval differs from train ∪ val by {len(diff)} ids, e.g. {diff[0]}"
            )
    if "test" in split_ids and "trainval" in split_ids:
        both = set(split_ids["test"]) & set(split_ids["trainval"])
        if both:
            report.problems.append(
                f"{len(both)} ids are in both trainval and test, e.g. {sorted(both)[0]}"
            )


def _check_class_lists(
    report: Report, dataset: voc.VocDataset, split_ids: dict, anns: dict
) -> None:
    """Compares each ``<class>_<split>.txt`` with the labels the annotations imply."""
    for split, ids in split_ids.items():
        have = [anns[i] for i in ids if i in anns]
        expected = voc.image_level_labels(have, dataset.classes)
        for c, cls in enumerate(dataset.classes):
            path = dataset.root / "ImageSets" / "Main" / f"{cls}_{split}.txt"
            if not path.exists():
                report.problems.append(f"{path}: missing class list")
                continue
            try:
                listed = dataset.class_labels(cls, split)
            except InputError as e:
                report.problems.append(str(e))
                continue
            wrong = [
                (a.image_id, listed.get(a.image_id), int(expected[r, c]))
                for r, a in enumerate(have)
                if listed.get(a.image_id) != expected[r, c]
            ]
            if wrong:
                image_id, got, want = wrong[0]
                report.problems.append(
                    f"{path}: {len(wrong)} labels disagree with Annotations/, "
                    f"e.g. {image_id} listed {got}, annotation implies {want}"
                )


def _check_voc_images(
    report: Report, dataset: voc.VocDataset, anns: dict, progress: bool, sample: int | None
) -> None:
    sizes = []
    chosen = _pick(sorted(anns), sample)
    for image_id in tqdm(
        chosen, desc=f"images {dataset.root.name}", disable=not progress, unit="img"
    ):
        ann = anns[image_id]
        try:
            w, h = _image_size(dataset.image_path(image_id, ann.filename))
        except InputError as e:
            report.problems.append(str(e))
            continue
        if (w, h) != (ann.width, ann.height):
            report.problems.append(
                f"{dataset.annotation_path(image_id)}: field 'size': annotation says {ann.width}x{ann.height}, image is {w}x{h}"
            )
        sizes.append((w, h))
    _size_range(report, sizes, len(sizes))


def _size_range(report: Report, sizes: list[tuple[int, int]], checked: int) -> None:
    if sizes:
        ws, hs = zip(*sizes, strict=True)
        report.sizes = (min(ws), max(ws), min(hs), max(hs))
    report.sizes_checked = checked


def inspect_source(
    root: Path,
    layout: str,
    check_images: bool = True,
    progress: bool = True,
    sample: int | None = 2000,
) -> Report:
    """Returns the Report of a Tiny-ImageNet or ImageFolder source set (images per class and split)."""
    report = Report(root, layout)
    splits = [s for s in ("train", "val", "test") if (root / s).is_dir()]
    per_class: dict[str, Counter] = defaultdict(Counter)
    paths = []
    for split in splits:
        skip = SkipLog(enabled=True)
        try:
            sset = source_sets.read_source(root, split, skip_bad=skip)
        except InputError as e:
            report.problems.append(str(e))
            continue
        report.problems.extend(str(e) for e in skip.errors)
        if len(sset) == 0:
            report.notes.append(f"{split}: no labelled images (unlabelled split?)")
            continue
        report.splits[split] = len(sset)
        report.columns.append(f"{split} images")
        for wnid, n in sset.counts().items():
            per_class[wnid][f"{split} images"] = n
        for wnid in sset.classes:
            if not per_class[wnid][f"{split} images"]:
                report.problems.append(f"{root / split / wnid}: class {wnid} has no {split} images")
        paths.extend(s.path for s in sset.samples)
    names = source_sets.read_class_names(root)
    report.per_class = {w: dict(per_class[w]) for w in sorted(per_class)}
    if names:
        report.notes.append(
            f"{len(names)} class names available (e.g. {next(iter(sorted(report.per_class)), '')}: {names.get(next(iter(sorted(report.per_class)), ''), '?')})"
        )
    sizes = []
    if check_images:
        for p in tqdm(
            _pick(paths, sample), desc=f"images {root.name}", disable=not progress, unit="img"
        ):
            try:
                sizes.append(_image_size(p))
            except InputError as e:
                report.problems.append(str(e))
    _size_range(report, sizes, len(sizes))
    return report
