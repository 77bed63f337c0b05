"""Source (classification) sets for pretraining: Tiny-ImageNet-200 and ImageFolder/ILSVRC layouts.

Two layouts are read:

- ``tiny-imagenet``: ``wnids.txt`` lists the classes; ``train/<wnid>/images/<wnid>_<i>.JPEG``
  with boxes in ``train/<wnid>/<wnid>_boxes.txt`` (``file x0 y0 x1 y1``, 0-based inclusive);
  ``val/images/`` with labels and boxes in ``val/val_annotations.txt``
  (``file wnid x0 y0 x1 y1``). ``test/`` has no labels and reads as an empty set.
- ``imagefolder``: ``<root>/<split>/<class>/*.{JPEG,jpg,jpeg,png}``, e.g. ILSVRC's
  ``Data/CLS-LOC`` train layout. The class list is the ``train`` split's sub-folders (so labels
  agree across splits), or the split's own when there is no ``train``.

Boxes are converted once, here, to 0-based half-open floats ``(x0, y0, x1, y1)``. Listings use
``os.scandir`` only (no image is opened), so the 60,000-image Tiny-ImageNet train split reads in a
fraction of a second. Every order is deterministic: classes sorted, images in natural order.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mlt.data.textfiles import read_text
from mlt.errors import InputError, SkipLog

TINY_IMAGENET = "tiny-imagenet"
IMAGEFOLDER = "imagefolder"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
WNID_RE = re.compile(r"n\d{8}")
_DIGITS_RE = re.compile(r"(\d+)")

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class SourceSample:
    """One labelled source image; ``box`` is 0-based half-open, or None when the set has none."""

    path: Path
    label: int
    wnid: str
    box: Box | None


@dataclass
class SourceSet:
    """A split of a source set: its classes (label i is ``classes[i]``) and samples."""

    root: Path
    split: str
    layout: str
    classes: list[str]
    samples: list[SourceSample]

    def __len__(self) -> int:
        return len(self.samples)

    def counts(self) -> dict[str, int]:
        """Returns the number of images per class, for every class in ``classes`` order (zeros included)."""
        found = Counter(s.wnid for s in self.samples)
        return {w: found[w] for w in self.classes}


def is_wnid(value: object) -> bool:
    """Returns True when ``value`` is a WordNet id string such as ``n01443537``."""
    return isinstance(value, str) and WNID_RE.fullmatch(value) is not None


def natural_key(name: str) -> list:
    """Returns a sort key that orders embedded numbers numerically (``x_2`` before ``x_10``)."""
    parts: list = _DIGITS_RE.split(name)  # text, number, text, ...: types align across names
    parts[1::2] = map(int, parts[1::2])
    return parts


def detect_source_layout(root: Path) -> str | None:
    """Returns "tiny-imagenet", "imagefolder" or None when ``root`` is neither."""
    root = Path(root)
    if not root.is_dir():
        return None
    train = root / "train"
    if (root / "wnids.txt").is_file() and train.is_dir():
        if any((train / d / "images").is_dir() for d in _subdir_names(train)[:5]):
            return TINY_IMAGENET
    for split in _subdir_names(root):
        for cls in _subdir_names(root / split)[:5]:
            if any(_is_image(name) for name in _file_names(root / split / cls, limit=20)):
                return IMAGEFOLDER
    return None


def read_class_names(root: Path) -> dict[str, str]:
    """Returns wnid -> human-readable name, or {} when the set has no names file.

    Tiny-ImageNet's ``words.txt`` covers all of WordNet; only the wnids of ``wnids.txt`` are kept.
    For ILSVRC, ``LOC_synset_mapping.txt`` is looked for in ``root`` and up to three parents (the
    Kaggle download keeps it beside ``ILSVRC/``). Lines without a name are ignored: names are
    only for display.
    """
    root = Path(root)
    words = root / "words.txt"
    if words.is_file():
        keep = set(_read_wnids(root / "wnids.txt")) if (root / "wnids.txt").is_file() else None
        return _read_names_file(words, keep)
    for folder in [root, *list(root.resolve().parents)[:3]]:
        mapping = folder / "LOC_synset_mapping.txt"
        if mapping.is_file():
            return _read_names_file(mapping, None)
    return {}


def read_source(
    root: Path,
    split: str = "train",
    classes: list[str] | None = None,
    images_per_class: int | None = None,
    skip_bad: SkipLog | None = None,
) -> SourceSet:
    """Returns the SourceSet of ``split`` under ``root``, optionally restricted to ``classes``.

    With ``classes``, labels are 0..len(classes)-1 in sorted-wnid order. ``images_per_class``
    keeps the first N images of each class in natural file-name order and requires every class
    to have at least N. Missing images and malformed annotation lines go to ``skip_bad``
    (raised when skipping is off). Skipped, a missing image is left out, a train image whose box
    line is bad keeps ``box=None``, and a bad val line drops its image.
    """
    root = Path(root)
    skip = skip_bad or SkipLog()
    layout = detect_source_layout(root)
    if layout is None:
        raise InputError(
            root,
            None,
            str(root),
            "a Tiny-ImageNet folder (wnids.txt, train/<wnid>/images/) or an ImageFolder "
            "(<split>/<class>/*.JPEG)",
            kind="unknown layout",
        )
    if not (root / split).is_dir():
        raise InputError(
            root,
            "split",
            split,
            f"one of the split folders {_subdir_names(root)}",
            kind="missing split",
        )
    if layout == TINY_IMAGENET:
        all_classes = _read_wnids(root / "wnids.txt")
        known_from = root / "wnids.txt"
    else:
        all_classes = (
            _subdir_names(root / "train")
            if (root / "train").is_dir()
            else _subdir_names(root / split)
        )
        known_from = root / ("train" if (root / "train").is_dir() else split)
    chosen = _restrict(all_classes, classes, known_from)
    label_of = {w: i for i, w in enumerate(chosen)}
    if layout == TINY_IMAGENET:
        reader = {"train": _tiny_train, "val": _tiny_val}.get(split, _unlabelled)
    else:
        reader = _imagefolder
    per_class = reader(root / split, label_of, set(all_classes), skip)
    if images_per_class is not None:
        per_class = _take_first(per_class, images_per_class, root / split)
    samples = [s for w in chosen for s in per_class.get(w, [])]
    return SourceSet(root, split, layout, chosen, samples)


# --- layouts ---------------------------------------------------------------------------------

PerClass = dict[str, list[SourceSample]]


def _tiny_train(
    split_dir: Path, label_of: dict[str, int], known: set[str], skip: SkipLog
) -> PerClass:
    out: PerClass = {}
    for wnid, label in label_of.items():
        class_dir = split_dir / wnid
        images_dir = class_dir / "images"
        if not images_dir.is_dir():
            skip.handle(
                InputError(
                    images_dir, None, wnid, "a folder of the class's images", kind="missing folder"
                )
            )
            continue
        names = sorted((n for n in _file_names(images_dir) if _is_image(n)), key=natural_key)
        boxes_file = class_dir / f"{wnid}_boxes.txt"
        boxes: dict[str, Box] = {}
        if boxes_file.is_file():
            on_disk = set(names)
            for line_no, tokens in _lines(boxes_file):
                box = _parse_box(tokens, 1, boxes_file, line_no, skip, "'<file> x0 y0 x1 y1'")
                if box is None:
                    continue
                if tokens[0] not in on_disk:
                    skip.handle(
                        InputError(
                            boxes_file,
                            f"line {line_no}",
                            tokens[0],
                            f"an image in {images_dir}",
                            kind="missing image",
                        )
                    )
                    continue
                boxes[tokens[0]] = box
        out[wnid] = [SourceSample(images_dir / n, label, wnid, boxes.get(n)) for n in names]
    return out


def _tiny_val(
    split_dir: Path, label_of: dict[str, int], known: set[str], skip: SkipLog
) -> PerClass:
    images_dir = split_dir / "images"
    ann = split_dir / "val_annotations.txt"
    if not ann.is_file():
        raise InputError(
            ann, None, str(ann), "Tiny-ImageNet's validation labels file", kind="missing file"
        )
    on_disk = set(_file_names(images_dir)) if images_dir.is_dir() else set()
    found: dict[str, list[tuple[str, Box]]] = {}
    for line_no, tokens in _lines(ann):
        box = _parse_box(tokens, 2, ann, line_no, skip, "'<file> <wnid> x0 y0 x1 y1'")
        if box is None:
            continue
        name, wnid = tokens[0], tokens[1]
        if wnid not in known:
            skip.handle(
                InputError(
                    ann, f"line {line_no}", wnid, "a wnid listed in wnids.txt", kind="unknown class"
                )
            )
        elif name not in on_disk:
            skip.handle(
                InputError(
                    ann, f"line {line_no}", name, f"an image in {images_dir}", kind="missing image"
                )
            )
        elif wnid in label_of:
            found.setdefault(wnid, []).append((name, box))
    return {
        wnid: [
            SourceSample(images_dir / n, label_of[wnid], wnid, b)
            for n, b in sorted(items, key=lambda t: natural_key(t[0]))
        ]
        for wnid, items in found.items()
    }


def _unlabelled(
    split_dir: Path, label_of: dict[str, int], known: set[str], skip: SkipLog
) -> PerClass:
    return {}


def _imagefolder(
    split_dir: Path, label_of: dict[str, int], known: set[str], skip: SkipLog
) -> PerClass:
    for extra in sorted(set(_subdir_names(split_dir)) - known):
        skip.handle(
            InputError(
                split_dir / extra,
                None,
                extra,
                f"one of the {len(known)} classes of the train split",
                kind="unknown class",
            )
        )
    out: PerClass = {}
    for wnid, label in label_of.items():
        class_dir = split_dir / wnid
        if not class_dir.is_dir():
            continue  # a class without images in this split; SourceSet.counts() shows the zero
        names = sorted((n for n in _file_names(class_dir) if _is_image(n)), key=natural_key)
        out[wnid] = [SourceSample(class_dir / n, label, wnid, None) for n in names]
    return out


# --- helpers ---------------------------------------------------------------------------------


def _restrict(all_classes: list[str], classes: list[str] | None, known_from: Path) -> list[str]:
    if classes is None:
        return sorted(all_classes)
    wanted = sorted(set(classes))
    if not wanted:
        raise InputError(
            known_from, "classes", list(classes), "at least one class", kind="empty class list"
        )
    known = set(all_classes)
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise InputError(
            known_from,
            "classes",
            unknown[0] if len(unknown) == 1 else unknown,
            f"classes of the source set ({len(known)} in {known_from.name})",
            kind="unknown class",
        )
    return wanted


def _take_first(per_class: PerClass, n: int, split_dir: Path) -> PerClass:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(split_dir, "images_per_class", n, "a positive integer", kind="bad value")
    short = {w: len(s) for w, s in per_class.items() if len(s) < n}
    if short:
        wnid = min(short, key=lambda w: (short[w], w))
        raise InputError(
            split_dir,
            "images_per_class",
            n,
            f"at most the smallest class's image count ({wnid} has {short[wnid]})",
            kind="too few images",
        )
    return {w: s[:n] for w, s in per_class.items()}


def _parse_box(
    tokens: list[str], first: int, file: Path, line_no: int, skip: SkipLog, expected: str
) -> Box | None:
    """Returns the half-open box from the 0-based inclusive ``tokens[first:first+4]``, or None if skipped."""
    bad = len(tokens) != first + 4
    if not bad:
        try:
            x0, y0, x1, y1 = map(float, tokens[first:])
        except ValueError:
            bad = True
        else:
            bad = not (0 <= x0 <= x1 and 0 <= y0 <= y1)
    if bad:
        skip.handle(
            InputError(
                file,
                f"line {line_no}",
                " ".join(tokens),
                f"{expected} with 0 <= x0 <= x1, 0 <= y0 <= y1 (0-based inclusive)",
                kind="bad box",
            )
        )
        return None
    return (x0, y0, x1 + 1.0, y1 + 1.0)


def _read_wnids(path: Path) -> list[str]:
    wnids: list[str] = []
    seen: set[str] = set()
    for line_no, tokens in _lines(path):
        value = " ".join(tokens)
        if len(tokens) != 1 or not is_wnid(tokens[0]):
            raise InputError(
                path,
                f"line {line_no}",
                value,
                "one WordNet id per line, like n01443537",
                kind="bad wnid",
            )
        if value in seen:
            raise InputError(
                path, f"line {line_no}", value, "each wnid once", kind="duplicate wnid"
            )
        seen.add(value)
        wnids.append(value)
    if not wnids:
        raise InputError(path, None, "", "at least one wnid", kind="empty file")
    return wnids


def _read_names_file(path: Path, keep: set[str] | None) -> dict[str, str]:
    names: dict[str, str] = {}
    for line in read_text(path).splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and (keep is None or parts[0] in keep):
            names[parts[0]] = parts[1].strip()
    return names


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """Returns (1-based line number, whitespace-split tokens) for each non-blank line."""
    return [
        (i, line.split()) for i, line in enumerate(read_text(path).splitlines(), 1) if line.strip()
    ]


def _subdir_names(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _file_names(folder: Path, limit: int | None = None) -> list[str]:
    names: list[str] = []
    try:
        with os.scandir(folder) as it:
            for e in it:
                if not e.name.startswith(".") and e.is_file():
                    names.append(e.name)
                    if limit is not None and len(names) >= limit:
                        break
    except (FileNotFoundError, NotADirectoryError):
        pass
    return names


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)
