"""PASCAL VOC devkit reader (2007 and 2012 layouts, and datasets in the same format).

Reads ``ImageSets/Main`` split lists and ``<class>_<split>.txt`` image labels (CRLF tolerant),
``Annotations/*.xml`` through defusedxml, and the VOC2012 ``ImageSets/Action`` layout. VOC's
1-based inclusive integer boxes are converted here, once, to the 0-based half-open float boxes
used everywhere else: ``(x0, y0, x1, y1) = (xmin - 1, ymin - 1, xmax, ymax)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from mlt.data.textfiles import read_text
from mlt.errors import InputError, SkipLog

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
VOC_ACTIONS: tuple[str, ...] = (
    "jumping", "phoning", "playinginstrument", "reading", "ridingbike", "ridinghorse",
    "running", "takingphoto", "usingcomputer", "walking",
)  # fmt: skip
SPLITS: tuple[str, ...] = ("train", "val", "trainval", "test")
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".JPG", ".JPEG", ".png")

_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class VocObject:
    """One annotated object; ``box`` is 0-based half-open float pixels (x0, y0, x1, y1)."""

    name: str
    box: tuple[float, float, float, float]
    difficult: bool = False
    truncated: bool = False
    actions: tuple[str, ...] = ()


@dataclass(frozen=True)
class VocAnnotation:
    """One image's annotation: its id, file name, size and objects."""

    image_id: str
    filename: str
    width: int
    height: int
    objects: tuple[VocObject, ...] = field(default_factory=tuple)

    def boxes(self) -> np.ndarray:
        """Returns the objects' boxes as an (M, 4) float32 array."""
        return np.array([o.box for o in self.objects], dtype=np.float32).reshape(-1, 4)

    def class_indices(self, classes: list[str] | tuple[str, ...]) -> np.ndarray:
        """Returns each object's index in ``classes`` as an (M,) int64 array."""
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[o.name] for o in self.objects], dtype=np.int64)

    def difficult(self) -> np.ndarray:
        """Returns the objects' difficult flags as an (M,) bool array."""
        return np.array([o.difficult for o in self.objects], dtype=bool)


def check_image_id(image_id: str, file: Path | str, line: int | None = None) -> str:
    """Returns ``image_id`` when it is a plain file stem; raises InputError for path tricks."""
    if not _ID_RE.match(image_id) or ".." in image_id:
        where = f"line {line}" if line is not None else "image id"
        raise InputError(
            file, where, image_id, "a plain image id (letters, digits, _ . -; no path separators)"
        )
    return image_id


def _read_lines(path: Path) -> list[tuple[int, list[str]]]:
    """Returns (1-based line number, whitespace-split tokens) of each non-blank line; CRLF safe."""
    text = read_text(path, "split file")
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_id_list(path: Path, allow_repeats: bool = False) -> list[str]:
    """Returns the image ids (first token of each line) of a split list file, in file order.

    Raises InputError on an empty list, a duplicate id (unless ``allow_repeats``: then repeats
    are folded) or an id with path separators.
    """
    path = Path(path)
    ids: list[str] = []
    seen: dict[str, int] = {}
    for n, tokens in _read_lines(path):
        image_id = check_image_id(tokens[0], path, n)
        if image_id in seen:
            if allow_repeats:
                continue
            raise InputError(
                path, f"line {n}", image_id, f"unique ids (already on line {seen[image_id]})",
                kind="duplicate id",
            )  # fmt: skip
        seen[image_id] = n
        ids.append(image_id)
    if not ids:
        raise InputError(path, None, "", "at least one image id", kind="empty split")
    return ids


def read_split_ids(root: Path, split: str, task: str = "Main") -> list[str]:
    """Returns the image ids of ``<root>/ImageSets/<task>/<split>.txt`` in file order.

    ``ImageSets/Action`` lists an image once per person, so repeats are folded there.
    """
    path = Path(root) / "ImageSets" / task / f"{split}.txt"
    return read_id_list(path, allow_repeats=task == "Action")


def read_label_list(path: Path) -> dict[str, int]:
    """Returns {image id: label} of a ``<class>_<split>.txt`` file (1, -1, or 0 = difficult only)."""
    path = Path(path)
    labels: dict[str, int] = {}
    for n, tokens in _read_lines(path):
        if len(tokens) != 2 or tokens[1] not in ("1", "-1", "0"):
            raise InputError(path, f"line {n}", " ".join(tokens), "'<image id> <1|-1|0>'")
        image_id = check_image_id(tokens[0], path, n)
        if image_id in labels:
            raise InputError(path, f"line {n}", image_id, "unique ids", kind="duplicate id")
        labels[image_id] = int(tokens[1])
    return labels


def read_class_labels(root: Path, cls: str, split: str) -> dict[str, int]:
    """Returns {image id: label} of ``<root>/ImageSets/Main/<cls>_<split>.txt``."""
    return read_label_list(Path(root) / "ImageSets" / "Main" / f"{cls}_{split}.txt")


def read_action_labels(root: Path, action: str, split: str) -> dict[tuple[str, int], int]:
    """Returns {(image id, 1-based person index): label} of ``ImageSets/Action/<action>_<split>.txt``."""
    path = Path(root) / "ImageSets" / "Action" / f"{action}_{split}.txt"
    labels: dict[tuple[str, int], int] = {}
    for n, tokens in _read_lines(path):
        if len(tokens) != 3 or not tokens[1].isdigit() or tokens[2] not in ("1", "-1", "0"):
            raise InputError(
                path, f"line {n}", " ".join(tokens), "'<image id> <person index> <1|-1|0>'"
            )
        labels[(check_image_id(tokens[0], path, n), int(tokens[1]))] = int(tokens[2])
    return labels


def discover_classes(folder: Path) -> list[str]:
    """Returns the class names that have ``<class>_<split>.txt`` lists in ``folder``, sorted.

    ``folder`` is a devkit root (its ``ImageSets/Main`` is searched) or a list folder itself.
    A VOC-format set of other classes (TinyVOC's 12) is recognised from its own lists.
    """
    folder = Path(folder)
    if (folder / "ImageSets" / "Main").is_dir():
        folder = folder / "ImageSets" / "Main"
    names = set()
    for p in folder.glob("*_*.txt"):
        stem, _, split = p.stem.rpartition("_")
        if split in SPLITS and stem:
            names.add(stem)
    return sorted(names)


def _text(node, tag: str, file: Path, field_path: str, required: bool = True) -> str | None:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if required:
            raise InputError(
                file, field_path, None, f"a <{tag}> element with a value", kind="missing field"
            )
        return None
    return child.text.strip()


def _number(node, tag: str, file: Path, field_path: str) -> float:
    raw = _text(node, tag, file, field_path)
    try:
        return float(raw)
    except ValueError:
        raise InputError(file, field_path, raw, "a number") from None


def _flag(node, tag: str, file: Path, field_path: str) -> bool:
    raw = _text(node, tag, file, field_path, required=False)
    if raw is None:
        return False
    if raw not in ("0", "1"):
        raise InputError(file, field_path, raw, "0 or 1")
    return raw == "1"


def parse_annotation(
    path: Path,
    classes: Iterable[str] | None = None,
    skip_bad: SkipLog | None = None,
    image_id: str | None = None,
) -> VocAnnotation:
    """Returns the parsed VOC XML annotation at ``path``, boxes converted to 0-based half-open.

    Validates: well-formed, safe XML (no entities or DTDs); image size; each object's class
    (when ``classes`` is given) and box (numeric, inside the image, not inverted, non-zero
    area). A bad object is skipped (logged, counted) when ``skip_bad`` is enabled; otherwise
    every problem raises InputError naming the file, the field and the value.
    """
    path = Path(path)
    skip = skip_bad or SkipLog()
    try:
        tree = SafeET.parse(str(path))
    except FileNotFoundError:
        raise InputError(
            path, None, str(path), "an existing annotation file", kind="missing annotation"
        ) from None
    except DefusedXmlException as e:
        raise InputError(
            path,
            None,
            type(e).__name__,
            "XML without entities, DTDs or external references",
            kind="unsafe XML",
        ) from None
    except SafeET.ParseError as e:
        raise InputError(
            path, f"line {e.position[0]}", str(e), "well-formed XML", kind="malformed XML"
        ) from None
    root = tree.getroot()
    if root.tag != "annotation":
        raise InputError(path, "root element", root.tag, "<annotation>")
    size = root.find("size")
    if size is None:
        raise InputError(
            path, "size", None, "a <size> element with width and height", kind="missing field"
        )
    width = _number(size, "width", path, "size.width")
    height = _number(size, "height", path, "size.height")
    if width < 1 or height < 1 or width != int(width) or height != int(height):
        raise InputError(
            path, "size", f"{width}x{height}", "positive integer width and height", kind="bad size"
        )
    width, height = int(width), int(height)
    known = set(classes) if classes is not None else None

    objects = []
    for i, obj in enumerate(root.iter("object")):
        where = f"object[{i}]"
        try:
            objects.append(_parse_object(obj, path, where, width, height, known))
        except InputError as err:
            skip.handle(err)
    filename = _text(root, "filename", path, "filename", required=False)
    stem = image_id or path.stem
    return VocAnnotation(stem, filename or f"{stem}.jpg", width, height, tuple(objects))


def _parse_object(
    obj, path: Path, where: str, width: int, height: int, known: set[str] | None
) -> VocObject:
    name = _text(obj, "name", path, f"{where}.name")
    if known is not None and name not in known:
        raise InputError(
            path,
            f"{where}.name",
            name,
            f"one of the dataset's classes {sorted(known)}",
            kind="unknown class",
        )
    bb = obj.find("bndbox")
    if bb is None:
        raise InputError(path, f"{where}.bndbox", None, "a <bndbox> element", kind="missing field")
    xmin, ymin, xmax, ymax = (
        _number(bb, t, path, f"{where}.bndbox.{t}") for t in ("xmin", "ymin", "xmax", "ymax")
    )
    box = (xmin - 1.0, ymin - 1.0, xmax, ymax)
    raw = f"({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})"
    if box[2] <= box[0] or box[3] <= box[1]:
        raise InputError(
            path,
            f"{where}.bndbox",
            raw,
            "xmin <= xmax and ymin <= ymax (1-based inclusive)",
            kind="bad box",
        )
    if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height:
        raise InputError(
            path,
            f"{where}.bndbox",
            raw,
            f"a box inside the {width}x{height} image (1-based, 1..{width} x 1..{height})",
            kind="bad box",
        )
    actions: tuple[str, ...] = ()
    acts = obj.find("actions")
    if acts is not None:
        actions = tuple(a.tag for a in acts if (a.text or "").strip() == "1")
    return VocObject(
        name=name,
        box=box,
        difficult=_flag(obj, "difficult", path, f"{where}.difficult"),
        truncated=_flag(obj, "truncated", path, f"{where}.truncated"),
        actions=actions,
    )


@dataclass
class VocDataset:
    """A VOC-format devkit folder (``Annotations/``, ``JPEGImages/``, ``ImageSets/``).

    ``classes`` defaults to the classes found in ``ImageSets/Main`` (the 20 VOC classes for
    VOC itself, TinyVOC's 12 for TinyVOC). Target class index i ↔ ``classes[i]``; background is
    ``len(classes)``. ``limit`` keeps the first N ids of each split list (``trainval``: the
    first N of ``train`` and of ``val`` when both lists exist) for demos and smoke runs.
    """

    root: Path
    classes: tuple[str, ...] = ()
    skip_bad: SkipLog = field(default_factory=SkipLog)
    limit: int | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not (self.root / "Annotations").is_dir():
            raise InputError(
                self.root,
                "Annotations",
                None,
                "a VOC devkit folder with Annotations/, JPEGImages/ and ImageSets/",
                kind="not a VOC dataset",
            )
        if not self.classes:
            self.classes = tuple(discover_classes(self.root)) or VOC_CLASSES

    @property
    def num_classes(self) -> int:
        """Returns the number of target classes (background not counted)."""
        return len(self.classes)

    def ids(self, split: str) -> list[str]:
        """Returns the image ids of ``split`` (train/val/trainval/test), the first ``limit`` if set."""
        if self.limit is None:
            return read_split_ids(self.root, split)
        main = self.root / "ImageSets" / "Main"
        if split == "trainval" and (main / "train.txt").is_file() and (main / "val.txt").is_file():
            train = self.ids("train")
            seen = set(train)
            return train + [i for i in self.ids("val") if i not in seen]
        return read_split_ids(self.root, split)[: self.limit]

    def annotation_path(self, image_id: str) -> Path:
        """Returns the path of the image's annotation XML."""
        return self.root / "Annotations" / f"{check_image_id(image_id, self.root)}.xml"

    def image_path(self, image_id: str, filename: str | None = None) -> Path:
        """Returns the image file path; raises InputError when no image of that id exists."""
        check_image_id(image_id, self.root)
        folder = self.root / "JPEGImages"
        if filename:
            p = folder / Path(filename).name
            if p.is_file():
                return p
        for suffix in IMAGE_SUFFIXES:
            p = folder / f"{image_id}{suffix}"
            if p.is_file():
                return p
        raise InputError(
            folder,
            "image",
            image_id,
            f"an image file {image_id}.jpg in {folder}",
            kind="missing image",
        )

    def annotation(self, image_id: str) -> VocAnnotation:
        """Returns the parsed annotation of one image (objects of unknown classes are errors)."""
        return parse_annotation(
            self.annotation_path(image_id), self.classes, self.skip_bad, image_id
        )

    def iter_annotations(self, split: str, check_images: bool = True) -> Iterator[VocAnnotation]:
        """Yields the annotation of every image of ``split``; a bad image is skipped under skip_bad."""
        for image_id in self.ids(split):
            try:
                ann = self.annotation(image_id)
                if check_images:
                    self.image_path(image_id, ann.filename)
            except InputError as err:
                self.skip_bad.handle(err)
                continue
            yield ann

    def load(self, split: str, check_images: bool = True) -> list[VocAnnotation]:
        """Returns the annotations of every image of ``split`` as a list."""
        return list(self.iter_annotations(split, check_images))

    def class_labels(self, cls: str, split: str) -> dict[str, int]:
        """Returns the image labels of ``<cls>_<split>.txt`` (1 present, -1 absent, 0 difficult only)."""
        return read_class_labels(self.root, cls, split)


def image_level_labels(
    annotations: Iterable[VocAnnotation], classes: tuple[str, ...] | list[str]
) -> np.ndarray:
    """Returns an (N, C) int8 matrix of devkit image labels: 1 present, 0 only difficult, -1 absent."""
    anns = list(annotations)
    index = {c: i for i, c in enumerate(classes)}
    out = np.full((len(anns), len(classes)), -1, dtype=np.int8)
    for r, ann in enumerate(anns):
        for o in ann.objects:
            c = index[o.name]
            if not o.difficult:
                out[r, c] = 1
            elif out[r, c] == -1:
                out[r, c] = 0
    return out


def read_actions(root: Path, split: str, skip_bad: SkipLog | None = None) -> list[VocAnnotation]:
    """Returns the VOC2012 action annotations of ``split``: person objects with their actions.

    Images come from ``ImageSets/Action/<split>.txt``; each person object keeps its box and the
    actions flagged 1 in its ``<actions>`` element; persons without ``<actions>`` are dropped.
    """
    skip = skip_bad or SkipLog()
    root = Path(root)
    out = []
    for image_id in read_split_ids(root, split, task="Action"):
        try:
            ann = parse_annotation(root / "Annotations" / f"{image_id}.xml", None, skip, image_id)
        except InputError as err:
            skip.handle(err)
            continue
        persons = tuple(o for o in ann.objects if o.name == "person" and o.actions)
        out.append(VocAnnotation(ann.image_id, ann.filename, ann.width, ann.height, persons))
    return out
