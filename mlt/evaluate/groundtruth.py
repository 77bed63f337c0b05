"""Ground truth for evaluation, taken from parsed VOC annotations.

Image labels follow the devkit's classification lists: 1 when the image has a non-difficult
object of the class, 0 when it has only difficult ones, -1 otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlt.data.voc import VocAnnotation, image_level_labels
from mlt.errors import InputError


def _check_names(annotations: Sequence[VocAnnotation], classes: Sequence[str]) -> None:
    known = set(classes)
    for ann in annotations:
        for i, o in enumerate(ann.objects):
            if o.name not in known:
                raise InputError(
                    ann.image_id,
                    f"object[{i}].name",
                    o.name,
                    f"one of the evaluated classes {sorted(known)}",
                    kind="unknown class",
                )


def image_labels(annotations: Sequence[VocAnnotation], classes: Sequence[str]) -> np.ndarray:
    """Returns the (N, C) int8 devkit labels of the images: 1 present, 0 only difficult, -1 absent."""
    annotations = list(annotations)
    _check_names(annotations, classes)
    return image_level_labels(annotations, tuple(classes))


def class_boxes(
    annotation: VocAnnotation, classes: Sequence[str], include_difficult: bool = True
) -> list[np.ndarray]:
    """Returns one (n_c, 4) float32 array of the image's object boxes per class, in class order."""
    _check_names([annotation], classes)
    boxes = annotation.boxes()
    index = annotation.class_indices(tuple(classes))
    keep = np.ones(len(boxes), bool) if include_difficult else ~annotation.difficult()
    return [boxes[(index == c) & keep] for c in range(len(classes))]
