"""Writes small VOC-format devkits for tests (real JPEGs, real XML, real split lists)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


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
    """An image of the fixture with its objects."""

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


def write_voc(root: Path, classes: list[str], splits: dict[str, list[Img]], seed: int = 0) -> Path:
    """Returns ``root`` after writing a consistent VOC devkit: images, XML, split and class lists."""
    rng = np.random.default_rng(seed)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    all_splits = dict(splits)
    if "train" in splits and "val" in splits and "trainval" not in splits:
        all_splits["trainval"] = splits["train"] + splits["val"]
    for split, imgs in all_splits.items():
        for img in imgs:
            pixels = rng.integers(0, 255, (img.height, img.width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "JPEGImages" / f"{img.image_id}.jpg", quality=90)
            (root / "Annotations" / f"{img.image_id}.xml").write_text(annotation_xml(img))
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


def small_voc(root: Path) -> Path:
    """Returns a 2-class devkit with 3 train, 2 val and 2 test images (one difficult object)."""
    classes = ["cat", "dog"]
    splits = {
        "train": [
            Img("000001", objects=[Obj("cat", 5, 5, 30, 30)]),
            Img("000002", objects=[Obj("dog", 10, 8, 60, 40), Obj("cat", 1, 1, 8, 8, difficult=1)]),
            Img("000003", width=40, height=40, objects=[Obj("dog", 1, 1, 40, 40, truncated=1)]),
        ],
        "val": [
            Img("000004", objects=[Obj("cat", 20, 10, 50, 40)]),
            Img("000005", objects=[Obj("dog", 2, 2, 20, 20), Obj("dog", 30, 20, 60, 45)]),
        ],
        "test": [
            Img("000006", objects=[Obj("cat", 3, 3, 33, 33)]),
            Img("000007", objects=[Obj("dog", 5, 5, 25, 25, difficult=1)]),
        ],
    }
    return write_voc(root, classes, splits)
