"""Pictures of an image's labelled windows, for checking the grid and the labelling by eye."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mlt.windows import (
    BACKGROUND,
    DROPPED_DIFFICULT,
    DROPPED_MULTI,
    IGNORE_DIFFICULT,
    IGNORE_MULTI,
    label_counts,
)

# Twenty colours that stay distinct from each other (after Trubetskoy's list of 20), with no
# grey, white or dark red, which stand for background, ground truth and dropped windows.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (67, 99, 216), (245, 130, 49),
    (145, 30, 180), (66, 212, 244), (240, 50, 230), (191, 239, 69), (250, 190, 212),
    (70, 153, 144), (220, 190, 255), (154, 99, 36), (255, 250, 200), (0, 0, 117),
    (170, 255, 195), (128, 128, 0), (255, 216, 177), (0, 0, 0), (128, 128, 255),
)  # fmt: skip
BACKGROUND_RGBA = (200, 200, 200, 70)
DROPPED_RGBA = (180, 0, 0, 190)
POSITIVE_ALPHA = 230
GT_RGB = (255, 255, 255)
LEGEND_BG = (32, 32, 32)
DASH = 4


def class_colour(index: int) -> tuple[int, int, int]:
    """Returns the RGB colour of class `index` (the palette repeats after 20 classes)."""
    return PALETTE[index % len(PALETTE)]


def _rect(box: np.ndarray, scale: int) -> tuple[int, int, int, int]:
    """Returns a half-open box as Pillow's inclusive rectangle on the upscaled image."""
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    return round(x0), round(y0), max(round(x1) - 1, round(x0)), max(round(y1) - 1, round(y0))


def _dashed_rectangle(draw: ImageDraw.ImageDraw, rect: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = rect
    for x in range(x0, x1 + 1, 2 * DASH):
        draw.line([(x, y0), (min(x + DASH - 1, x1), y0)], fill=fill)
        draw.line([(x, y1), (min(x + DASH - 1, x1), y1)], fill=fill)
    for y in range(y0, y1 + 1, 2 * DASH):
        draw.line([(x0, y), (x0, min(y + DASH - 1, y1))], fill=fill)
        draw.line([(x1, y), (x1, min(y + DASH - 1, y1))], fill=fill)


def _legend(counts: dict[str, int], class_names: Sequence[str], width: int, font) -> Image.Image:
    """Returns a strip listing each label present with its colour swatch and window count."""
    colours = {name: class_colour(i) for i, name in enumerate(class_names)}
    colours[BACKGROUND] = BACKGROUND_RGBA[:3]
    colours[DROPPED_MULTI] = colours[DROPPED_DIFFICULT] = DROPPED_RGBA[:3]
    entries = [(f"{name}: {n}", colours[name]) for name, n in counts.items() if n]

    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = max(probe.textbbox((0, 0), "Ag", font=font)[3], 10) + 4
    pad, swatch = 4, line_h - 6
    positions, x, y = [], pad, pad
    for text, _ in entries:
        item_w = swatch + 4 + round(probe.textlength(text, font=font)) + 3 * pad
        if x > pad and x + item_w > width:
            x, y = pad, y + line_h
        positions.append((x, y))
        x += item_w
    strip = Image.new("RGB", (width, y + line_h + pad), LEGEND_BG)
    draw = ImageDraw.Draw(strip)
    for (text, colour), (x, y) in zip(entries, positions, strict=True):
        draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch], fill=colour, outline=(255, 255, 255))
        draw.text((x + swatch + 4, y), text, fill=(235, 235, 235), font=font)
    return strip


def draw_windows(
    image: Image.Image,
    windows: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    gt_boxes: np.ndarray | None = None,
    gt_names: list[str] | None = None,
    scale: int = 3,
) -> Image.Image:
    """Returns an RGB picture of the image upscaled by `scale` with its labelled windows drawn
    over it (background faint grey, dropped dashed dark red, positives in their class colour,
    ground truth thick white) and a legend strip of window counts below."""
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    scale = int(scale)
    windows = np.asarray(windows, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(windows):
        raise ValueError(
            f"labels must have one entry per window ({len(windows)}), got {len(labels)}"
        )
    gt_boxes = (
        np.zeros((0, 4)) if gt_boxes is None else np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    )
    if gt_names is not None and len(gt_names) != len(gt_boxes):
        raise ValueError(
            f"gt_names must have one name per box ({len(gt_boxes)}), got {len(gt_names)}"
        )
    num_classes = len(class_names)
    counts = label_counts(labels, class_names)

    photo = image.convert("RGB").resize(
        (image.width * scale, image.height * scale), Image.Resampling.BILINEAR
    )
    overlay = Image.new("RGBA", photo.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for i in np.flatnonzero(labels == num_classes):
        draw.rectangle(_rect(windows[i], scale), outline=BACKGROUND_RGBA, width=1)
    for i in np.flatnonzero((labels == IGNORE_MULTI) | (labels == IGNORE_DIFFICULT)):
        _dashed_rectangle(draw, _rect(windows[i], scale), DROPPED_RGBA)
    for i in np.flatnonzero((labels >= 0) & (labels < num_classes)):
        colour = (*class_colour(int(labels[i])), POSITIVE_ALPHA)
        draw.rectangle(_rect(windows[i], scale), outline=colour, width=2)
    picture = Image.alpha_composite(photo.convert("RGBA"), overlay).convert("RGB")

    font = ImageFont.load_default()
    draw = ImageDraw.Draw(picture)
    for j, box in enumerate(gt_boxes):
        rect = _rect(box, scale)
        draw.rectangle(rect, outline=GT_RGB, width=3)
        if gt_names is not None:
            tx, ty = rect[0] + 3, rect[1] + 3
            draw.rectangle(draw.textbbox((tx, ty), gt_names[j], font=font), fill=(0, 0, 0))
            draw.text((tx, ty), gt_names[j], fill=GT_RGB, font=font)

    legend = _legend(counts, class_names, picture.width, font)
    out = Image.new("RGB", (picture.width, picture.height + legend.height), LEGEND_BG)
    out.paste(picture, (0, 0))
    out.paste(legend, (0, picture.height))
    return out
