"""Synthetic data for the demo and tests: a Tiny-ImageNet-layout source set, a VOC-format target.

``make demo`` runs the whole pipeline where ``../shared/data`` is absent, so it first writes
(``make_demo_data``) a small source set whose classes are coloured textures (stripes, checker,
dots, rings at a class colour, angle and frequency, jittered per image), a VOC2007-format devkit
whose objects are rectangles filled with the patterns of some source classes on a noisy
background (so transfer works, as with TinyVOC), and the label map between the two. Everything
is deterministic from a seed; each image draws from its own generator, so files do not depend on
generation order.

The VOC writer here (``write_voc``, ``annotation_xml``, ``Obj``, ``Img``) is the project's one
VOC devkit writer; the tests' ``vocfixture`` re-exports it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from mlt.data.labelmap import LabelMap, dump_label_map
from mlt.errors import InputError

SOURCE_SIZE = 64
MARKER = "synthetic.json"
FORMAT_VERSION = 1  # bump when the generated data changes, so old demo folders are rebuilt

# --- the VOC devkit writer ---------------------------------------------------------------------


@dataclass
class Obj:
    """An object as VOC writes it: 1-based inclusive integer box."""

    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    difficult: int = 0
    truncated: int = 0
    actions: tuple[str, ...] = ()  # VOC2012 action flags set to 1 (written only when given)


@dataclass
class Img:
    """An image of a devkit with its objects."""

    image_id: str
    width: int = 64
    height: int = 48
    objects: list[Obj] = field(default_factory=list)


def _actions_xml(o: Obj) -> str:
    if not o.actions:
        return ""
    return "<actions>" + "".join(f"<{a}>1</{a}>" for a in o.actions) + "</actions>"


def annotation_xml(img: Img) -> str:
    """Returns the VOC XML text of one image."""
    objs = "".join(
        f"<object><name>{o.name}</name><pose>Unspecified</pose><truncated>{o.truncated}</truncated>"
        f"<difficult>{o.difficult}</difficult><bndbox><xmin>{o.xmin}</xmin><ymin>{o.ymin}</ymin>"
        f"<xmax>{o.xmax}</xmax><ymax>{o.ymax}</ymax></bndbox>{_actions_xml(o)}</object>"
        for o in img.objects
    )
    return (
        f"<annotation><folder>T</folder><filename>{img.image_id}.jpg</filename><size>"
        f"<width>{img.width}</width><height>{img.height}</height><depth>3</depth></size>{objs}</annotation>"
    )


def write_voc(
    root: Path,
    classes: Sequence[str],
    splits: dict[str, list[Img]],
    seed: int = 0,
    pixels: Callable[[Img], np.ndarray] | None = None,
) -> Path:
    """Returns ``root`` after writing a consistent VOC devkit: images, XML, split and class lists.

    ``trainval`` is added as train + val when both are given and it is not. ``pixels(img)``
    gives an image's (height, width, 3) uint8 pixels, written once per image id; without it
    every listing of an image draws uniform noise from ``default_rng(seed)`` in listing order
    (a train image is drawn again for trainval), which the tests' fixtures rely on byte for byte.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    all_splits = dict(splits)
    if "train" in splits and "val" in splits and "trainval" not in splits:
        all_splits["trainval"] = splits["train"] + splits["val"]
    written: set[str] = set()
    for split, imgs in all_splits.items():
        for img in imgs:
            if pixels is None:
                array = rng.integers(0, 255, (img.height, img.width, 3), dtype=np.uint8)
            elif img.image_id in written:
                continue
            else:
                array = pixels(img)
                if array.shape != (img.height, img.width, 3) or array.dtype != np.uint8:
                    raise ValueError(
                        f"pixels({img.image_id!r}) gave {array.dtype} {array.shape}, expected "
                        f"uint8 {(img.height, img.width, 3)}"
                    )
            Image.fromarray(array).save(root / "JPEGImages" / f"{img.image_id}.jpg", quality=90)
            (root / "Annotations" / f"{img.image_id}.xml").write_text(annotation_xml(img))
            written.add(img.image_id)
        (root / "ImageSets/Main" / f"{split}.txt").write_text(
            "".join(f"{i.image_id}\n" for i in imgs)
        )
        for cls in classes:
            lines = []
            for img in imgs:
                mine = [o for o in img.objects if o.name == cls]
                label = 1 if any(not o.difficult for o in mine) else (0 if mine else -1)
                lines.append(f"{img.image_id} {label:2d}\n")
            (root / "ImageSets/Main" / f"{cls}_{split}.txt").write_text("".join(lines))
    return root


# --- patterns ----------------------------------------------------------------------------------

COLOURS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("red", (0.90, 0.12, 0.10)),
    ("blue", (0.10, 0.30, 0.95)),
    ("yellow", (0.95, 0.88, 0.10)),
    ("green", (0.10, 0.70, 0.20)),
    ("purple", (0.55, 0.18, 0.85)),
    ("orange", (1.00, 0.55, 0.00)),
    ("cyan", (0.00, 0.80, 0.85)),
    ("pink", (1.00, 0.45, 0.75)),
    ("brown", (0.50, 0.30, 0.10)),
    ("white", (0.97, 0.97, 0.97)),
)
TEXTURES = ("stripes", "checker", "dots", "rings")
TARGET_NAMES = ("bird", "boat", "car", "cat", "dog", "sheep", "bus", "chair", "cow", "train")


@dataclass(frozen=True)
class Pattern:
    """A source class's look: a colour, a texture, its angle (degrees) and cycles per object side."""

    name: str
    colour: tuple[float, float, float]
    texture: str
    angle: float
    cycles: float


def class_pattern(index: int) -> Pattern:
    """Returns the pattern of source class ``index`` (a pure function of the index).

    Classes 0..9 differ in colour and cycle through the four textures; later classes repeat a
    colour with another texture, then another angle and frequency.
    """
    colour_name, colour = COLOURS[index % len(COLOURS)]
    rnd = index // len(COLOURS)
    texture = TEXTURES[(index + rnd) % len(TEXTURES)]
    angle = float((index * 47 + rnd * 23) % 180)
    cycles = 3.0 + (index * 7 % 5) * 0.5
    name = f"{colour_name} {texture}"
    if index >= len(COLOURS) * len(TEXTURES):
        name += f" {int(angle)}deg {cycles:g}x"
    return Pattern(name, colour, texture, angle, cycles)


def source_wnid(index: int) -> str:
    """Returns the WordNet-like id of synthetic source class ``index`` (``n90000003`` for 3)."""
    if not 0 <= index < 10_000_000:
        raise ValueError(f"source class index {index} out of range 0..9999999")
    return f"n9{index:07d}"


def render_pattern(
    pattern: Pattern, height: int, width: int, rng: np.random.Generator
) -> np.ndarray:
    """Returns a (height, width, 3) float32 image in [0, 1] of ``pattern`` with random jitter.

    Jitter: phase, frequency (x0.8..1.25), angle (+-10 degrees), brightness (x0.75..1.15) and
    pixel noise, so no two images are the same and the class stays recognisable.
    """
    period = max(3.0, min(height, width) / (pattern.cycles * rng.uniform(0.8, 1.25)))
    theta = np.deg2rad(pattern.angle + rng.uniform(-10.0, 10.0))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u = x * np.cos(theta) + y * np.sin(theta) + rng.uniform(0.0, period)
    v = -x * np.sin(theta) + y * np.cos(theta) + rng.uniform(0.0, period)
    if pattern.texture == "stripes":
        t = 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
    elif pattern.texture == "checker":
        t = (np.floor(2 * u / period) + np.floor(2 * v / period)) % 2
    elif pattern.texture == "dots":
        du, dv = u % period - period / 2, v % period - period / 2
        t = (du * du + dv * dv < (0.32 * period) ** 2).astype(np.float32)
    elif pattern.texture == "rings":
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = np.hypot(x - cx, y - cy)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * r / period + rng.uniform(0, 2 * np.pi))
    else:
        raise ValueError(f"unknown texture {pattern.texture!r}, expected one of {TEXTURES}")
    colour = np.asarray(pattern.colour, np.float32) * rng.uniform(0.75, 1.15)
    image = (0.2 + 0.8 * t.astype(np.float32))[..., None] * colour
    image += rng.normal(0.0, 0.05, image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0)


def noise_background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Returns a (height, width, 3) float32 clutter image in [0, 1]: smooth grey blobs plus noise."""
    grid = (height // 12 + 2, width // 12 + 2)
    coarse = rng.uniform(0.25, 0.7) + rng.normal(0.0, 0.12, (*grid, 1))
    coarse = coarse + rng.normal(0.0, 0.03, (*grid, 3))  # a faint tint, far from any class colour
    small = Image.fromarray(_to_uint8(coarse))
    smooth = np.asarray(small.resize((width, height), Image.BILINEAR), np.float32) / 255.0
    return np.clip(smooth + rng.normal(0.0, 0.05, smooth.shape), 0.0, 1.0).astype(np.float32)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


# --- the source set ----------------------------------------------------------------------------


def _source_names(classes: int | Sequence[str]) -> list[str]:
    if isinstance(classes, int):
        if classes < 1:
            raise ValueError(f"classes={classes}: expected at least one class")
        return [class_pattern(i).name for i in range(classes)]
    names = [str(c) for c in classes]
    if not names:
        raise ValueError("classes: expected at least one class name")
    return names


def source_image(index: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
    """Returns one source image of class ``index`` (uint8, size x size x 3) and its box.

    The pattern fills a random rectangle of 60..100% of each side over clutter; the box is
    Tiny-ImageNet's 0-based inclusive ``(x0, y0, x1, y1)``.
    """
    image = noise_background(size, size, rng)
    w, h = (int(rng.integers(int(0.6 * size), size + 1)) for _ in range(2))
    x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    image[y0 : y0 + h, x0 : x0 + w] = render_pattern(class_pattern(index), h, w, rng)
    return _to_uint8(image), (x0, y0, x0 + w - 1, y0 + h - 1)


def make_source(
    root: Path,
    classes: int | Sequence[str] = 10,
    train_per_class: int = 100,
    val_per_class: int = 20,
    size: int = SOURCE_SIZE,
    seed: int = 0,
) -> Path:
    """Returns ``root`` after writing a synthetic source set in the Tiny-ImageNet-200 layout.

    ``classes`` is a count or the classes' display names (``words.txt``); class i has wnid
    ``source_wnid(i)`` and pattern ``class_pattern(i)``. Writes ``wnids.txt``, ``words.txt``,
    ``train/<wnid>/images/<wnid>_<i>.JPEG`` with ``train/<wnid>/<wnid>_boxes.txt``, and
    ``val/images/val_<k>.JPEG`` (classes interleaved) with ``val/val_annotations.txt``.
    """
    root = Path(root)
    names = _source_names(classes)
    wnids = [source_wnid(i) for i in range(len(names))]
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (root / "words.txt").write_text(
        "".join(f"{w}\t{n}\n" for w, n in zip(wnids, names, strict=True))
    )
    for c, wnid in enumerate(wnids):
        images = root / "train" / wnid / "images"
        images.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(train_per_class):
            pixels, box = source_image(c, size, _rng(seed, 0, c, i))
            name = f"{wnid}_{i}.JPEG"
            Image.fromarray(pixels).save(images / name, format="JPEG", quality=90)
            lines.append(f"{name}\t" + "\t".join(map(str, box)) + "\n")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(lines))
    val_images = root / "val" / "images"
    val_images.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng([seed, 1]).permutation(len(wnids) * val_per_class)
    lines = []
    for k, j in enumerate(order.tolist()):
        c, i = divmod(j, val_per_class)
        pixels, box = source_image(c, size, _rng(seed, 1, c, i))
        name = f"val_{k}.JPEG"
        Image.fromarray(pixels).save(val_images / name, format="JPEG", quality=90)
        lines.append(f"{name}\t{wnids[c]}\t" + "\t".join(map(str, box)) + "\n")
    (root / "val" / "val_annotations.txt").write_text("".join(lines))
    return root


# --- the target set and the label map -----------------------------------------------------------


def _target_names(classes: int | Sequence[str]) -> list[str]:
    if isinstance(classes, int):
        if classes < 1:
            raise ValueError(f"classes={classes}: expected at least one target class")
        names = [TARGET_NAMES[i] if i < len(TARGET_NAMES) else f"class{i}" for i in range(classes)]
    else:
        names = [str(c) for c in classes]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"classes={names}: expected distinct target class names")
    return sorted(names)  # VocDataset lists a devkit's classes sorted: label i = i-th name


def target_sources(
    classes: int | Sequence[str] = 4,
    source_classes: int | Sequence[str] = 10,
    sources_per_class: int = 2,
) -> dict[str, list[int]]:
    """Returns target class -> the source class indices whose patterns its objects wear.

    Target class j (sorted names) takes source classes ``j*k .. j*k+k-1`` with k =
    ``sources_per_class`` (fewer when the source set is small); the source classes left over
    are unrelated to the target, like most of Tiny-ImageNet for TinyVOC.
    """
    names = _target_names(classes)
    n_source = len(_source_names(source_classes))
    if n_source < len(names):
        raise ValueError(
            f"{n_source} source classes cannot give patterns to {len(names)} target classes"
        )
    k = max(1, min(sources_per_class, n_source // len(names)))
    return {cls: list(range(j * k, (j + 1) * k)) for j, cls in enumerate(names)}


def label_map(
    classes: int | Sequence[str] = 4,
    source_classes: int | Sequence[str] = 10,
    sources_per_class: int = 2,
    name: str = "synthetic",
) -> LabelMap:
    """Returns the LabelMap from the synthetic target classes to their source wnids."""
    sources = target_sources(classes, source_classes, sources_per_class)
    wnids = {cls: [source_wnid(i) for i in idx] for cls, idx in sources.items()}
    return LabelMap(None, list(sources), wnids, name)


def make_labelmap(
    path: Path,
    classes: int | Sequence[str] = 4,
    source_classes: int | Sequence[str] = 10,
    sources_per_class: int = 2,
) -> Path:
    """Returns ``path`` after writing the label map YAML of ``label_map`` (source names as comments)."""
    path = Path(path)
    names = _source_names(source_classes)
    lm = label_map(classes, source_classes, sources_per_class)
    dump_label_map(lm, path, {source_wnid(i): n for i, n in enumerate(names)})
    return path


def _place(w: int, h: int, side: int, most: float, rng: np.random.Generator) -> tuple[int, ...]:
    bw = int(rng.integers(side, max(side + 1, int(most * w))))
    bh = int(rng.integers(side, max(side + 1, int(most * h))))
    bw, bh = min(bw, w), min(bh, h)
    x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    return x0, y0, x0 + bw, y0 + bh  # 0-based half-open


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def target_image(
    image_id: str,
    first_class: int,
    sources: dict[str, list[int]],
    rng: np.random.Generator,
    difficult_rate: float = 0.15,
) -> tuple[Img, np.ndarray]:
    """Returns one target scene (its Img annotation and uint8 pixels).

    96..160 px a side, clutter background, 1-2 objects (the first of class ``first_class``),
    each a rectangle of at least ~35% of the shorter side filled with the pattern of one of its
    class's source classes, overlapping another at most 30% of the smaller. A second object is
    faded into the background and marked difficult at ``difficult_rate`` (the first never is, so
    every class has positives); objects touching the border are marked truncated.
    """
    names = list(sources)
    w, h = int(rng.integers(96, 161)), int(rng.integers(96, 161))
    side = int(np.ceil(0.35 * min(w, h)))
    image = noise_background(h, w, rng)
    boxes: list[tuple[int, int, int, int]] = []
    objects: list[Obj] = []
    n_objects = 1 + int(rng.random() < 0.45)
    most = 0.8 if n_objects == 1 else 0.55  # two objects must fit side by side
    for k in range(n_objects):
        for _ in range(10):
            box = _place(w, h, side, most, rng)
            if not any(_overlap(box, b) > 0.3 for b in boxes):
                break
        else:
            continue
        cls = names[first_class] if k == 0 else names[int(rng.integers(len(names)))]
        x0, y0, x1, y1 = box
        patch = render_pattern(class_pattern(int(rng.choice(sources[cls]))), y1 - y0, x1 - x0, rng)
        difficult = k > 0 and rng.random() < difficult_rate
        if difficult:
            patch = 0.35 * patch + 0.65 * image[y0:y1, x0:x1]
        image[y0:y1, x0:x1] = patch
        truncated = int(x0 == 0 or y0 == 0 or x1 == w or y1 == h)
        boxes.append(box)
        objects.append(Obj(cls, x0 + 1, y0 + 1, x1, y1, int(difficult), truncated))
    return Img(image_id, w, h, objects), _to_uint8(image)


def make_target(
    root: Path,
    classes: int | Sequence[str] = 4,
    n_train: int = 40,
    n_val: int = 40,
    n_test: int = 60,
    seed: int = 0,
    source_classes: int | Sequence[str] = 10,
    sources_per_class: int = 2,
) -> Path:
    """Returns ``root`` after writing a synthetic VOC2007-format devkit of ``classes``.

    Image ids are ``000001``... over train, val, test; ``trainval`` = train + val. The first
    object of each image cycles through the classes, so every class is in every split. Objects
    wear the patterns of ``target_sources(classes, source_classes, sources_per_class)``; write
    the matching label map with ``make_labelmap`` and the same arguments.
    """
    sources = target_sources(classes, source_classes, sources_per_class)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    splits: dict[str, list[Img]] = {}
    pixels: dict[str, np.ndarray] = {}
    number = 0
    for s, (split, n) in enumerate(counts.items()):
        splits[split] = []
        for i in range(n):
            number += 1
            img, array = target_image(
                f"{number:06d}", i % len(sources), sources, _rng(seed, 2, s, i)
            )
            splits[split].append(img)
            pixels[img.image_id] = array
    return write_voc(Path(root), list(sources), splits, pixels=lambda img: pixels[img.image_id])


# --- the demo folder ---------------------------------------------------------------------------


def demo_paths(root: Path) -> dict[str, Path]:
    """Returns the paths ``make_demo_data`` writes under ``root``: source, target, labelmap."""
    root = Path(root)
    return {
        "source": root / "source",
        "target": root / "target",
        "labelmap": root / "labelmap.yaml",
    }


def _complete(root: Path, marker: dict) -> bool:
    try:
        found = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return found == marker and all(p.exists() for p in demo_paths(root).values())


def make_demo_data(
    root: Path,
    seed: int = 0,
    *,
    source_images: tuple[int, int] = (100, 20),
    target_images: tuple[int, int, int] = (40, 40, 60),
) -> dict[str, Path]:
    """Returns {"source", "target", "labelmap"} paths under ``root`` after writing them once.

    A 10-class source set (``source_images`` = train, val images per class), a 4-class target
    devkit (``target_images`` = train, val, test images) whose classes wear the patterns of 8
    source classes, and their label map. Nothing is written when ``root`` already holds a
    complete set of these arguments (``synthetic.json``). The set is built in a temporary folder
    beside ``root`` and renamed into place, so an interrupted run leaves no half set; a set of
    other arguments or format version is replaced; a folder not written here raises InputError.
    """
    root = Path(root)
    paths = demo_paths(root)
    marker = {
        "format": FORMAT_VERSION,
        "seed": seed,
        "source_images": list(source_images),
        "target_images": list(target_images),
    }
    if _complete(root, marker):
        return paths
    if root.exists() and not (root / MARKER).is_file() and any(root.iterdir()):
        raise InputError(
            root,
            None,
            str(root),
            f"an empty or missing folder, or one written by make_demo_data (with {MARKER})",
            kind="folder not empty",
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would outlive the rename
    try:
        built = demo_paths(tmp)
        make_source(built["source"], 10, *source_images, seed=seed)
        make_target(built["target"], 4, *target_images, seed=seed, source_classes=10)
        make_labelmap(built["labelmap"], 4, source_classes=10)
        (tmp / MARKER).write_text(json.dumps(marker) + "\n")
        _swap_in(tmp, root, marker)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths


def _swap_in(tmp: Path, root: Path, marker: dict) -> None:
    """Renames the finished ``tmp`` to ``root``, replacing an outdated set (never a foreign folder)."""
    old = None
    if root.exists():
        if _complete(root, marker):
            return  # another process finished first
        if any(root.iterdir()):
            old = root.with_name(f".{root.name}.old-{os.getpid()}")
            os.replace(root, old)
        else:
            root.rmdir()
    try:
        os.replace(tmp, root)
    except OSError:
        if not _complete(root, marker):  # not a concurrent twin that won the race
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
