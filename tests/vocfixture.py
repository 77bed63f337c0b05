"""Writes small VOC-format devkits for tests (real JPEGs, real XML, real split lists).

The writer itself is ``mlt.data.synthetic``'s (the project's one VOC writer); re-exported here.
"""

from __future__ import annotations

from pathlib import Path

from mlt.data.synthetic import Img, Obj, annotation_xml, write_voc

__all__ = ["Img", "Obj", "annotation_xml", "small_voc", "write_voc"]


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
