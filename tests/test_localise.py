"""Localisation score maps, the pointing test and the overlay pictures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mlt.data.voc import VocAnnotation, VocObject
from mlt.evaluate import (
    PointingResult,
    heat_colours,
    overlay_png,
    pointing_accuracy,
    pointing_chance,
    pointing_hit,
    score_map,
)


def naive_map(boxes, scores, width, height):
    out = np.zeros((scores.shape[1], height, width))
    for y in range(height):
        for x in range(width):
            cx, cy = x + 0.5, y + 0.5
            covering = [
                i for i, (x0, y0, x1, y1) in enumerate(boxes) if x0 <= cx < x1 and y0 <= cy < y1
            ]
            if covering:
                out[:, y, x] = scores[covering].mean(0)
    return out


def test_score_map_matches_a_per_pixel_loop():
    rng = np.random.default_rng(0)
    width, height, m, k = 20, 15, 30, 3
    corner = rng.uniform(-4, [22, 17], (m, 2))
    size = rng.uniform(0, 12, (m, 2))
    boxes = np.concatenate([corner, corner + size], axis=1)
    boxes[0] = [3.5, 2.5, 3.5, 9.0]  # zero width
    boxes[1] = [6.0, 4.0, 2.0, 9.0]  # inverted
    boxes[2] = [-10.0, -10.0, -1.0, -1.0]  # outside
    boxes[3] = [0.0, 0.0, 20.0, 15.0]  # the whole image
    boxes[4] = [4.5, 5.5, 6.5, 7.5]  # edges on pixel centres
    boxes = boxes.astype(np.float32)  # as windows are stored
    scores = rng.random((m, k))
    smap = score_map(boxes, scores, width, height)
    assert smap.shape == (k, height, width) and smap.dtype == np.float32
    np.testing.assert_allclose(smap, naive_map(boxes, scores, width, height), atol=1e-6)
    one = score_map(boxes, scores[:, 1], width, height)
    assert one.shape == (height, width)
    np.testing.assert_array_equal(one, smap[1])


def test_score_map_integer_boxes_cover_their_pixels_and_uncovered_pixels_are_zero():
    smap = score_map(np.array([[1, 2, 4, 3], [3, 2, 5, 4]]), np.array([0.2, 0.6]), 6, 5)
    expected = np.zeros((5, 6), np.float32)
    expected[2, 1:3] = 0.2
    expected[2, 3] = 0.4  # covered by both
    expected[2:4, 4] = 0.6
    expected[3, 3] = 0.6
    np.testing.assert_allclose(smap, expected, atol=1e-7)
    assert not score_map(np.zeros((0, 4)), np.zeros((0, 2)), 3, 2).any()


@pytest.mark.parametrize(
    "boxes, scores, size, match",
    [
        (np.zeros((2, 3)), np.zeros(2), (4, 4), r"\(N, 4\)"),
        (np.zeros((2, 4)), np.zeros(3), (4, 4), "one row per box"),
        (np.zeros((2, 4)), np.array([0.1, np.nan]), (4, 4), "finite"),
        (np.zeros((2, 4)), np.zeros(2), (0, 4), "width"),
        (np.zeros((2, 4)), np.zeros(2), (4, 2.5), "height"),
    ],
)
def test_score_map_refuses_bad_input(boxes, scores, size, match):
    with pytest.raises(ValueError, match=match):
        score_map(boxes, scores, *size)


def test_pointing_hit():
    smap = np.zeros((8, 10))
    smap[3, 5] = 1.0  # peak pixel x=5, y=3, centre (5.5, 3.5)
    assert pointing_hit(smap, np.array([[4, 2, 6, 4]]))
    assert not pointing_hit(smap, np.array([[6, 3, 8, 5]]))  # 5.5 < 6
    assert not pointing_hit(smap, np.array([[0, 0, 5.5, 8]]))  # half-open: 5.5 is outside
    assert pointing_hit(smap, np.array([[6, 3, 8, 5]]), tolerance=1)
    assert pointing_hit(smap, np.array([[6, 3, 8, 5], [5, 3, 6, 4]]))  # any box
    assert not pointing_hit(smap, np.zeros((0, 4)))
    flat = np.ones((8, 10))  # ties: the first pixel in row-major order
    assert pointing_hit(flat, np.array([[0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="tolerance"):
        pointing_hit(smap, np.array([[0, 0, 1, 1]]), tolerance=-1)


def test_pointing_accuracy_hand_made():
    classes = ("cat", "dog")
    cat, dog = VocObject("cat", (0.0, 0.0, 10.0, 10.0)), VocObject("dog", (10.0, 0.0, 20.0, 10.0))
    left, right = [0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0]
    boxes = [np.array([left, right])] * 3
    probs = [
        # image 1, cat on the left: the cat map peaks on the left -> hit.
        np.array([[0.9, 0.1], [0.2, 0.3]]),
        # image 2, dog on the right, a difficult cat on the left: the dog map peaks left -> miss;
        # cat is not counted (difficult only).
        np.array([[0.1, 0.7], [0.9, 0.2]]),
        # image 3, no objects: counted for nothing.
        np.array([[0.5, 0.5], [0.5, 0.5]]),
    ]
    anns = [
        VocAnnotation("1", "1.jpg", 20, 10, (cat,)),
        VocAnnotation("2", "2.jpg", 20, 10, (dog, VocObject("cat", cat.box, difficult=True))),
        VocAnnotation("3", "3.jpg", 20, 10, ()),
    ]
    result = pointing_accuracy(iter(boxes), iter(probs), iter(anns), classes)
    assert isinstance(result, PointingResult)
    assert result.hits.tolist() == [1, 0] and result.counts.tolist() == [1, 1]
    assert result.accuracy.tolist() == [1.0, 0.0]
    assert result.mean_accuracy == 0.5
    assert result.to_metrics("val_") == {
        "val_pointing_cat": 1.0,
        "val_pointing_dog": 0.0,
        "val_pointing_mean": 0.5,
    }
    assert "mean" in result.format()

    # A hit on a difficult instance of the class counts (the point is on a real cat).
    anns2 = [
        VocAnnotation("4", "4.jpg", 20, 10, (VocObject("cat", right), VocObject("cat", left, True)))
    ]
    again = pointing_accuracy(boxes[:1], probs[:1], anns2, classes)
    assert again.hits.tolist() == [1, 0] and again.counts.tolist() == [1, 0]
    assert np.isnan(again.accuracy[1]) and again.mean_accuracy == 1.0

    with pytest.raises(ValueError):
        pointing_accuracy(boxes, probs[:2], anns, classes)
    with pytest.raises(ValueError, match="probs must have shape"):
        pointing_accuracy(boxes[:1], [np.zeros((2, 3))], anns[:1], classes)


def test_heat_colours_run_from_dark_to_light():
    colours = heat_colours(np.linspace(0, 1, 11)).astype(int)
    assert colours.shape == (11, 3) and heat_colours(np.zeros(1)).dtype == np.uint8
    brightness = colours.sum(1)
    assert np.all(np.diff(brightness) > 0)
    assert (heat_colours(np.array([-1.0, 2.0])) == heat_colours(np.array([0.0, 1.0]))).all()


def test_overlay_png_writes_a_png_of_the_image_size(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)
    smap = rng.random((15, 20))
    out = overlay_png(image, smap, tmp_path / "maps" / "a.png", boxes=np.array([[2, 3, 9, 12]]))
    assert out == tmp_path / "maps" / "a.png"
    assert [p.name for p in out.parent.iterdir()] == ["a.png"]  # no temporary left behind
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (20, 15) and im.mode == "RGB"
        pixels = np.asarray(im)
    assert tuple(pixels[3, 5]) == (0, 255, 0)  # the box's top edge
    assert tuple(pixels[7, 5]) != (0, 255, 0)  # inside the box, not drawn over

    # alpha 0 keeps the image; alpha 1 shows only the map's colours.
    plain = overlay_png(image, smap, tmp_path / "plain.png", alpha=0.0)
    with Image.open(plain) as im:
        np.testing.assert_array_equal(np.asarray(im), image)
    heat = overlay_png(image, np.full((15, 20), 0.3), tmp_path / "heat.png", alpha=1.0)
    with Image.open(heat) as im:
        assert (np.asarray(im) == heat_colours(np.ones(1))[0]).all()


def test_overlay_png_from_an_image_file_and_bad_shapes(tmp_path):
    src = tmp_path / "photo.jpg"
    Image.new("RGB", (12, 8), (40, 80, 120)).save(src)
    out = overlay_png(src, np.zeros((8, 12)), tmp_path / "o.png")
    with Image.open(out) as im:
        assert im.size == (12, 8)
    with pytest.raises(ValueError, match="image's shape"):
        overlay_png(src, np.zeros((12, 8)), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="alpha"):
        overlay_png(src, np.zeros((8, 12)), tmp_path / "bad.png", alpha=2)
    assert not (tmp_path / "bad.png").exists()


def test_pointing_chance_is_the_hit_rate_of_a_peak_at_every_pixel():
    classes = ("cat", "dog", "cow")
    anns = [
        VocAnnotation("1", "1.jpg", 20, 10, (VocObject("cat", (0.0, 0.0, 10.0, 10.0)),
                                              VocObject("dog", (2.3, 1.7, 7.6, 4.2)),
                                              VocObject("dog", (6.0, 3.0, 19.5, 9.9), difficult=True))),
        VocAnnotation("2", "2.jpg", 8, 6, (VocObject("dog", (-3.0, 4.4, 5.5, 12.0)),)),
    ]  # fmt: skip
    chance = pointing_chance(anns, classes)

    def brute(ann, c):
        boxes = np.array([o.box for o in ann.objects if o.name == classes[c]], dtype=np.float32)
        hits = []
        for i in range(ann.height * ann.width):
            smap = np.zeros((ann.height, ann.width))
            smap.flat[i] = 1.0
            hits.append(pointing_hit(smap, boxes))
        return np.mean(hits)

    assert chance[0] == pytest.approx(0.5)
    assert chance[1] == pytest.approx((brute(anns[0], 1) + brute(anns[1], 1)) / 2)
    assert 0 < chance[1] < 0.5 and np.isnan(chance[2])  # cow: in no image
