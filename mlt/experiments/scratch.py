"""The no-pretraining baseline's source set: labelled windows of the target's own train images.

The paper's NO PRETRAIN row trains the same network on VOC alone. Here the trunk is pretrained
the usual way (:mod:`mlt.train.pretrain`) but on a classification set cut from TinyVOC: every
window of the grid labelled by the head's rule (``windows.*``), saved as a ``input_size``-pixel
JPEG in an ``imagefolder`` layout (``train/<class>/``, ``val/<class>/``, classes = the target's
plus ``background``). Train windows come from ``head.train_split`` images (only the first
``head.train_images`` when it is set: the small-target regime, the same images its heads learn
from), val windows from ``head.val_split``; test images are never read. Each class keeps at
most ``per_class`` windows (a seeded draw), so background does not swamp the objects. The set is written to a temporary
folder and renamed into place when complete, so a half-written set is never used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from mlt.config import RunConfig
from mlt.data.voc import VocDataset
from mlt.decode import decode_image
from mlt.extract import dataset_items
from mlt.heads.run import first_images
from mlt.pipeline import SOURCE_RECIPE

BACKGROUND = "background"
DONE = SOURCE_RECIPE  # its text is the recipe; pretrain_digest hashes it


def draw_windows(labels: np.ndarray, num_classes: int, per_class: int, seed: int) -> np.ndarray:
    """Returns the sorted rows to keep: at most ``per_class`` of each label 0..C (C = background).

    Ignored windows (negative labels) are never kept; the draw is seeded.
    """
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(num_classes + 1):
        rows = np.flatnonzero(labels == c)
        if len(rows) > per_class:
            rows = rng.choice(rows, size=per_class, replace=False)
        keep.append(rows)
    return np.sort(np.concatenate(keep))


def recipe(config: RunConfig, per_class: int, val_per_class: int) -> str:
    """Returns the text that names a window set: target, splits, caps, size, window grid."""
    text = (f"target={Path(config.data.target).resolve()} train={config.head.train_split} "
            f"val={config.head.val_split} per_class={per_class} val_per_class={val_per_class} "
            f"size={config.pretrain.input_size} windows={config.windows.model_dump(mode='json')}")  # fmt: skip
    if config.head.train_images is not None:
        text += f" train_images={config.head.train_images}"
    return text


def source_folder(out: Path, text: str) -> Path:
    """Returns where the window set of recipe ``text`` lives: ``out``, unless ``out`` already holds
    a set of another recipe (another target set, say); then ``<out>-<recipe digest>`` beside it."""
    out = Path(out)
    if not (out / DONE).is_file() or (out / DONE).read_text() == text:
        return out
    return out.with_name(f"{out.name}-{hashlib.sha256(text.encode()).hexdigest()[:8]}")


def build_window_source(
    config: RunConfig, out: Path, per_class: int = 3500, val_per_class: int = 500,
    progress: bool = True,
) -> Path:  # fmt: skip
    """Writes the window classification set of ``config``'s target; returns its folder.

    The folder is ``out`` or, when ``out`` holds the set of another recipe, the sibling that
    :func:`source_folder` names. An existing complete set is reused as it is (its
    ``.complete`` marker holds the recipe that built it).
    """
    from tqdm import tqdm

    text = recipe(config, per_class, val_per_class)
    out = source_folder(out, text)
    if (out / DONE).is_file():
        return out
    ds = VocDataset(Path(config.data.target), limit=config.data.target_limit)
    classes = [*ds.classes, BACKGROUND]
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    size = config.pretrain.input_size
    for split, dest, cap in ((config.head.train_split, "train", per_class),
                             (config.head.val_split, "val", val_per_class)):  # fmt: skip
        items, _ = dataset_items(ds, [split], config.windows)
        if dest == "train":
            keep = set(first_images(ds.ids(split), config.head))
            items = [it for it in items if it.image_id in keep]
        labels = np.concatenate([it.label for it in items]).astype(np.int64)
        owner = np.repeat(np.arange(len(items)), [len(it.label) for it in items])
        offset = np.concatenate([[0], np.cumsum([len(it.label) for it in items])])
        rows = draw_windows(labels, len(ds.classes), cap, config.windows.seed)
        for c in classes:
            (tmp / dest / c).mkdir(parents=True, exist_ok=True)
        by_image: dict[int, list[int]] = {}
        for r in rows:
            by_image.setdefault(int(owner[r]), []).append(int(r))
        bar = tqdm(sorted(by_image), unit="img", desc=f"windows {dest}", disable=not progress)
        for i in bar:
            item = items[i]
            image = Image.fromarray(decode_image(item.path))
            for r in by_image[i]:
                j = r - offset[i]
                x0, y0, x1, y1 = (float(v) for v in item.boxes[j])
                crop = image.resize((size, size), Image.BILINEAR, box=(x0, y0, x1, y1))
                name = f"{item.image_id}_{j}.jpg"
                crop.save(tmp / dest / classes[labels[r]] / name, quality=90)
    (tmp / DONE).write_text(text)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
