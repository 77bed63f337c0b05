"""The window grid, the paper's window labels, the background sample and the window pictures."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mlt.windows import (
    BACKGROUND,
    DEFAULT_SCALES,
    DEFAULT_STRIDE_FRACTION,
    DROPPED_DIFFICULT,
    DROPPED_MULTI,
    IGNORE_DIFFICULT,
    IGNORE_MULTI,
    box_areas,
    image_rng,
    intersection_areas,
    label_counts,
    label_windows,
    training_mask,
    window_grid,
)
from mlt.windows_draw import class_colour, draw_windows

sizes = st.integers(1, 1000)
scale_sets = st.lists(st.floats(1.0, 8.0), min_size=1, max_size=5).map(tuple)
stride_fractions = st.floats(0.05, 1.0)


def per_scale(grid):
    """Yields (scale, boxes) for each scale of a grid, in grid order."""
    for i, lam in enumerate(grid.scales):
        yield lam, grid.boxes[grid.scale_index == i].astype(np.float64)


# ---------------------------------------------------------------- grid


def test_500x375_image_gets_512_windows_as_counted_by_hand() -> None:
    grid = window_grid(500, 375)
    assert len(grid) == 512
    # (n_x, n_y) per scale: e.g. λ=2 -> s=187.5, stride 62.5: 6 columns x 4 rows
    assert np.bincount(grid.scale_index).tolist() == [2, 8, 15, 24, 48, 70, 88, 117, 140]
    assert grid.scales == DEFAULT_SCALES
    assert grid.boxes.dtype == np.float32 and grid.scale_index.dtype == np.int16


def test_100x100_grid_by_hand() -> None:
    grid = window_grid(100, 100)
    assert np.bincount(grid.scale_index).tolist() == [1, 4, 9, 16, 36, 49, 64, 81, 100]
    # λ=2: side 50, stride exactly 50/3, four positions per axis
    half = grid.boxes[grid.scale_index == 3]
    np.testing.assert_allclose(half[:4, 0], [0, 50 / 3, 100 / 3, 50], rtol=1e-6)
    np.testing.assert_array_equal(half[0], [0, 0, 50, 50])
    np.testing.assert_array_equal(half[-1], [50, 50, 100, 100])


@settings(max_examples=150, deadline=None)
@given(width=sizes, height=sizes, scales=st.one_of(st.just(DEFAULT_SCALES), scale_sets),
       stride_fraction=st.one_of(st.just(DEFAULT_STRIDE_FRACTION), stride_fractions))  # fmt: skip
def test_grid_properties(width, height, scales, stride_fraction) -> None:
    grid = window_grid(width, height, scales, stride_fraction)
    b = grid.boxes.astype(np.float64)
    assert len(grid) == len(grid.scale_index) > 0
    # inside the image
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
    assert (b[:, 2] <= width).all() and (b[:, 3] <= height).all()
    # ordered by scale, then row, then column
    assert (np.diff(grid.scale_index) >= 0).all()
    for lam, boxes in per_scale(grid):
        side = min(width, height) / lam
        tol = 1e-5 * max(width, height)
        # square, of side min(w, h) / λ
        np.testing.assert_allclose(boxes[:, 2] - boxes[:, 0], side, atol=tol)
        np.testing.assert_allclose(boxes[:, 3] - boxes[:, 1], side, atol=tol)
        order = np.lexsort((boxes[:, 0], boxes[:, 1]))
        assert (order == np.arange(len(boxes))).all()
        # edge to edge
        assert boxes[:, 0].min() == 0 and boxes[:, 2].max() == width
        assert boxes[:, 1].min() == 0 and boxes[:, 3].max() == height
        for lo, extent in ((0, width), (1, height)):
            starts = np.unique(boxes[:, lo])
            assert len(boxes) % len(starts) == 0  # a full regular grid
            steps = np.diff(starts)
            # the stride is at most stride_fraction * s, so neighbours overlap that much ...
            assert (steps <= stride_fraction * side * (1 + 1e-5) + 1e-4).all()
            if len(steps):
                np.testing.assert_allclose(steps, steps.mean(), atol=1e-3)
            # ... and no denser than needed: one position fewer would exceed the stride
            n = len(starts)
            if n > 2:
                assert (extent - side) / (n - 2) > stride_fraction * side * (1 - 1e-5)
            elif n == 2:
                assert extent - side > 0
            else:
                assert extent - side <= stride_fraction * side * (1 + 1e-5)


@settings(max_examples=100, deadline=None)
@given(width=sizes, height=sizes)
def test_default_grid_neighbours_overlap_at_least_half(width, height) -> None:
    grid = window_grid(width, height)
    for _, boxes in per_scale(grid):
        side = boxes[0, 2] - boxes[0, 0]
        same_row = boxes[:-1, 1] == boxes[1:, 1]
        left, right = boxes[:-1][same_row], boxes[1:][same_row]
        overlap = (left[:, 2] - right[:, 0]) * side / box_areas(left)  # same row, same side
        assert (right[:, 0] - left[:, 0] <= side / 3 + 1e-6 * width).all()  # float32 boxes
        assert (overlap >= 0.5).all()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"width": 0, "height": 10}, "width"),
        ({"width": 10, "height": -3}, "height"),
        ({"width": 10.5, "height": 10}, "width"),
        ({"width": 10, "height": 10, "stride_fraction": 0}, "stride_fraction"),
        ({"width": 10, "height": 10, "stride_fraction": 1.5}, "stride_fraction"),
        ({"width": 10, "height": 10, "scales": (1.0, 0.5)}, "scales"),
        ({"width": 10, "height": 10, "scales": ()}, "scales"),
    ],
)
def test_grid_rejects_bad_arguments_naming_them(kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        window_grid(**kwargs)


# ---------------------------------------------------------------- labels


def reference_labels(windows, boxes, classes, num_classes, difficult, wf, bf) -> list[int]:
    """The rule written out window by window, object by object, in plain Python."""

    def area(b):
        return max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)

    labels = []
    for p in windows.tolist():
        qualifying = []
        for j, b in enumerate(boxes.tolist()):
            iw = max(min(p[2], b[2]) - max(p[0], b[0]), 0.0)
            ih = max(min(p[3], b[3]) - max(p[1], b[1]), 0.0)
            inter = iw * ih
            if area(p) > 0 and area(b) > 0 and inter >= wf * area(p) and inter >= bf * area(b):
                qualifying.append(j)
        if not qualifying:
            labels.append(num_classes)
        elif len(qualifying) >= 2:
            labels.append(IGNORE_MULTI)
        elif difficult[qualifying[0]]:
            labels.append(IGNORE_DIFFICULT)
        else:
            labels.append(int(classes[qualifying[0]]))
    return labels


def coordinate(limit: int):
    """Integers (many ties) or floats, a little beyond the image on both sides."""
    return st.one_of(st.integers(-20, limit + 20).map(float), st.floats(-20, limit + 20))


def boxes_in(width: int, height: int, max_boxes: int = 6, min_boxes: int = 0):
    """Boxes (N, 4) with corners drawn in (or a little beyond) the image; some have zero area."""
    corners = st.tuples(
        coordinate(width), coordinate(height), coordinate(width), coordinate(height)
    )

    def to_boxes(rows):
        b = np.array(rows, dtype=np.float64).reshape(-1, 4)
        return np.concatenate(
            [np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], axis=1
        )

    return st.lists(corners, min_size=min_boxes, max_size=max_boxes).map(to_boxes)


fractions = st.sampled_from([(0.2, 0.6), (0.25, 0.5), (0.0, 0.6), (0.2, 1.0), (0.5, 0.5)])


@settings(max_examples=100, deadline=None)
@given(data=st.data(), width=sizes, height=sizes, num_classes=st.integers(1, 4), fr=fractions)
def test_labels_match_the_rule_on_the_grid(data, width, height, num_classes, fr) -> None:
    grid = window_grid(width, height)
    boxes = data.draw(boxes_in(width, height))
    classes = np.array(data.draw(st.lists(st.integers(0, num_classes - 1), min_size=len(boxes), max_size=len(boxes))), dtype=int)  # fmt: skip
    difficult = np.array(data.draw(st.lists(st.booleans(), min_size=len(boxes), max_size=len(boxes))), dtype=bool)  # fmt: skip
    labels = label_windows(grid.boxes, boxes, classes, num_classes, difficult, *fr)
    assert labels.dtype == np.int32 and labels.shape == (len(grid),)
    # the slow reference checks every window that is not background and a spread of the rest
    # (thin images have up to ~10^5 windows)
    check = np.union1d(
        np.flatnonzero(labels != num_classes)[:500], np.linspace(0, len(grid) - 1, 500).astype(int)
    )
    expected = reference_labels(grid.boxes[check], boxes, classes, num_classes, difficult, *fr)
    assert labels[check].tolist() == expected


@settings(max_examples=150, deadline=None)
@given(data=st.data(), fr=fractions)
def test_labels_match_the_rule_on_small_integer_boxes(data, fr) -> None:
    # boxes on a 0..8 integer lattice: ties, multi-object and zero-area cases are frequent
    windows = data.draw(boxes_in(8, 8, max_boxes=12, min_boxes=1))
    boxes = data.draw(boxes_in(8, 8, max_boxes=4))
    classes = np.arange(len(boxes)) % 2
    difficult = np.arange(len(boxes)) == 1
    labels = label_windows(windows, boxes, classes, 2, difficult, *fr)
    assert labels.tolist() == reference_labels(windows, boxes, classes, 2, difficult, *fr)


def test_intersection_areas_by_hand() -> None:
    a = np.array([[0, 0, 10, 10], [5, 5, 6, 8]], dtype=float)
    b = np.array([[5, 0, 15, 4], [20, 20, 30, 30], [0, 0, 10, 10], [2, 2, 2, 9]], dtype=float)
    expected = [[5 * 4, 0, 100, 0], [0, 0, 3, 0]]
    assert intersection_areas(a, b).tolist() == expected
    assert intersection_areas(a, b).dtype == np.float64
    assert intersection_areas(a, np.zeros((0, 4))).shape == (2, 0)
    assert box_areas(b).tolist() == [40, 100, 100, 0]


def test_hand_worked_100x100_image_with_one_box() -> None:
    grid = window_grid(100, 100)
    box = np.array([[10, 10, 50, 50]], dtype=float)  # area 1600
    labels = label_windows(grid.boxes, box, np.array([3]), num_classes=5)

    def label_of(window):
        (i,) = np.flatnonzero((grid.boxes == np.array(window, np.float32)).all(axis=1))
        return labels[i]

    # the whole image: |P∩B| = 1600 < 0.2 * 10000
    assert label_of([0, 0, 100, 100]) == 5
    # λ=2, top left: 1600 >= 0.2 * 2500 and 1600 >= 0.6 * 1600
    assert label_of([0, 0, 50, 50]) == 3
    # λ=2, bottom right: no overlap
    assert label_of([50, 50, 100, 100]) == 5
    # λ=4, top left: 15 * 15 = 225 >= 0.2 * 625 but 225 < 0.6 * 1600
    assert label_of([0, 0, 25, 25]) == 5
    assert set(labels.tolist()) == {3, 5}


def test_boundary_ties_qualify() -> None:
    window = np.array([[0, 0, 10, 10]], dtype=float)  # area 100
    # |P∩B| = 25 = 0.25 |P| and = 0.5 |B| (B is 5 x 10): qualifies at exactly the thresholds
    box = np.array([[5, 5, 10, 15]], dtype=float)
    assert label_windows(window, box, [0], 1, window_fraction=0.25, box_fraction=0.5)[0] == 0
    nudged = box + [0, 1e-9, 0, 0]
    assert label_windows(window, nudged, [0], 1, window_fraction=0.25, box_fraction=0.5)[0] == 1


def test_two_qualifying_objects_drop_the_window_even_of_one_class() -> None:
    window = np.array([[0, 0, 20, 20]], dtype=float)
    boxes = np.array([[0, 0, 10, 20], [10, 0, 20, 20]], dtype=float)
    for classes in ([0, 0], [0, 1]):
        assert label_windows(window, boxes, classes, 2)[0] == IGNORE_MULTI
    # a difficult second object still makes it a multi-object window
    assert label_windows(window, boxes, [0, 1], 2, difficult=[False, True])[0] == IGNORE_MULTI


def test_single_difficult_object_drops_the_window() -> None:
    windows = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=float)
    boxes = np.array([[1, 1, 9, 9], [52, 52, 58, 58]], dtype=float)
    labels = label_windows(windows, boxes, [1, 0], 2, difficult=[True, False])
    assert labels.tolist() == [IGNORE_DIFFICULT, 0]


def test_degenerate_boxes_qualify_nowhere() -> None:
    windows = window_grid(40, 30).boxes
    boxes = np.array([[5, 5, 5, 20], [10, 10, 30, 10], [20, 20, 10, 10]], dtype=float)
    labels = label_windows(windows, boxes, [0, 1, 2], 3)
    assert (labels == 3).all()
    assert box_areas(boxes).tolist() == [0, 0, 0]
    assert (label_windows(windows, np.zeros((0, 4)), [], 3) == 3).all()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"boxes": np.zeros((2, 3))}, "boxes"),
        ({"classes": [0]}, "classes"),
        ({"classes": [0, 7]}, "classes"),
        ({"difficult": [True]}, "difficult"),
        ({"window_fraction": 1.5}, "window_fraction"),
        ({"box_fraction": -0.1}, "box_fraction"),
    ],
)
def test_label_windows_rejects_bad_arguments_naming_them(kwargs, name) -> None:
    args = {"windows": np.array([[0, 0, 10, 10]]), "boxes": np.array([[0, 0, 5, 5], [1, 1, 4, 4]]),
            "classes": [0, 1], "num_classes": 2} | kwargs  # fmt: skip
    with pytest.raises(ValueError, match=name):
        label_windows(**args)


# ---------------------------------------------------------------- training sample


label_arrays = st.lists(st.integers(IGNORE_DIFFICULT, 3), max_size=600).map(np.array)


@settings(max_examples=150, deadline=None)
@given(labels=label_arrays, fraction=st.floats(0, 1), seed=st.integers(0, 2**32))
def test_training_mask_keeps_positives_drops_ignored_samples_background(
    labels, fraction, seed
) -> None:
    mask = training_mask(labels, 3, fraction, seed)
    assert mask.dtype == bool and mask.shape == labels.shape
    assert mask[(labels >= 0) & (labels < 3)].all()
    assert not mask[labels < 0].any()
    n_background = int((labels == 3).sum())
    expected = round(fraction * n_background)
    if fraction > 0 and n_background:
        expected = max(expected, 1)
    assert int(mask[labels == 3].sum()) == expected
    assert (training_mask(labels, 3, fraction, seed) == mask).all()


def test_training_mask_fraction_ends_and_minimum() -> None:
    labels = np.array([0] * 5 + [2] * 30 + [IGNORE_MULTI] * 4)
    assert training_mask(labels, 2, 0.0, 0).sum() == 5
    assert training_mask(labels, 2, 1.0, 0).sum() == 35
    assert training_mask(labels, 2, 0.1, 0).sum() == 5 + 3
    assert training_mask(labels, 2, 0.001, 0).sum() == 5 + 1  # at least one background window
    with pytest.raises(ValueError, match="background_fraction"):
        training_mask(labels, 2, 1.5, 0)
    with pytest.raises(ValueError, match="labels"):
        training_mask(labels, 1, 0.1, 0)  # 2 is out of range for one class


def test_different_images_get_different_background_samples() -> None:
    labels = np.full(400, 5)
    masks = {training_mask(labels, 5, 0.1, image_rng(0, f"{i:06d}")).tobytes() for i in range(10)}
    assert len(masks) == 10
    again = training_mask(labels, 5, 0.1, image_rng(0, "000003"))
    assert again.tobytes() in masks


def test_image_rng_is_stable_across_runs_and_processes() -> None:
    first = 0.22653106289716618  # image_rng(0, "000001").random(), fixed forever
    assert image_rng(0, "000001").random() == first
    assert image_rng(1, "000001").random() != first
    assert image_rng(0, "000002").random() != first
    code = "from mlt.windows import image_rng; print(repr(image_rng(0, '000001').random()))"
    env = os.environ | {"PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert float(out.stdout) == first


def test_label_counts_has_every_key() -> None:
    names = ["cat", "dog"]
    counts = label_counts(np.array([0, 0, 2, 2, 2, IGNORE_MULTI]), names)
    assert counts == {"cat": 2, "dog": 0, BACKGROUND: 3, DROPPED_MULTI: 1, DROPPED_DIFFICULT: 0}
    assert label_counts(np.array([], dtype=int), names) == dict.fromkeys(counts, 0)
    with pytest.raises(ValueError, match="labels"):
        label_counts(np.array([3]), names)


# ---------------------------------------------------------------- pictures


def test_draw_windows_draws_a_positive_window_in_its_class_colour() -> None:
    image = Image.new("RGB", (64, 48), (90, 90, 90))
    windows = np.array([[8, 8, 40, 40], [30, 10, 60, 40], [0, 0, 20, 20]], dtype=float)
    labels = np.array([1, 2, IGNORE_MULTI])
    out = draw_windows(
        image, windows, labels, ["cat", "dog"], np.array([[10, 10, 38, 38.0]]), ["dog"]
    )
    assert out.mode == "RGB" and out.width == 64 * 3 and out.height > 48 * 3
    pixels = np.asarray(out).astype(int)
    # the positive window's left edge, away from the ground-truth box, is near the class colour
    edge = pixels[60:100, 8 * 3]
    assert (np.abs(edge - class_colour(1)).max(axis=1) < 40).all()
    # a point no window touches keeps the photo's colour
    assert pixels[46 * 3 - 2, 3 * 3].tolist() == [90, 90, 90]
    # the legend below shows the class colour swatch
    legend = pixels[48 * 3 :]
    assert (legend == class_colour(1)).all(axis=2).any()


# ---------------------------------------------------------------- real data


def voc_objects(xml_path: Path) -> tuple[tuple[int, int], list[tuple[str, list[float], bool]]]:
    """Returns ((width, height), [(name, 0-based half-open box, difficult)]) of a VOC XML file."""
    root = ET.parse(xml_path).getroot()
    size = (int(root.findtext("size/width")), int(root.findtext("size/height")))
    objects = []
    for obj in root.iter("object"):
        xmin, ymin, xmax, ymax = (
            float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")
        )
        objects.append(
            (
                obj.findtext("name"),
                [xmin - 1, ymin - 1, xmax, ymax],
                obj.findtext("difficult") == "1",
            )
        )
    return size, objects


def test_tinyvoc_images_get_positive_windows_for_their_objects(tinyvoc_root: Path) -> None:
    ids = (tinyvoc_root / "ImageSets" / "Main" / "trainval.txt").read_text().split()[:40]
    parsed = {i: voc_objects(tinyvoc_root / "Annotations" / f"{i}.xml") for i in ids}
    names = sorted({name for _, objects in parsed.values() for name, _, _ in objects})
    found = wanted = 0
    for image_id, ((width, height), objects) in parsed.items():
        with Image.open(tinyvoc_root / "JPEGImages" / f"{image_id}.jpg") as image:
            assert image.size == (width, height)
        grid = window_grid(width, height)
        assert 300 <= len(grid) <= 800
        boxes = np.array([box for _, box, _ in objects]).reshape(-1, 4)
        classes = np.array([names.index(name) for name, _, _ in objects])
        difficult = np.array([d for _, _, d in objects], dtype=bool)
        labels = label_windows(grid.boxes, boxes, classes, len(names), difficult)
        positives = set(labels[(labels >= 0) & (labels < len(names))].tolist())
        assert positives <= set(classes.tolist())
        annotated = set(classes[~difficult].tolist())
        wanted += len(annotated)
        found += len(annotated & positives)
        assert (labels == len(names)).sum() > len(labels) / 2  # background dominates
    assert wanted > 40 and found >= 0.9 * wanted
