"""Source-set readers on the real Tiny-ImageNet-200 and on small trees made in the test."""

from __future__ import annotations

from pathlib import Path

import pytest
from datapaths import SHARED_DATA as DATA

from mlt.data.source import detect_source_layout, natural_key, read_class_names, read_source
from mlt.errors import InputError, SkipLog

TINY = DATA / "tiny-imagenet-200"
needs_tiny = pytest.mark.skipif(
    not (TINY / "wnids.txt").is_file(), reason=f"no Tiny-ImageNet at {TINY}"
)


@pytest.fixture(scope="module")
def tiny_train():
    return read_source(TINY, "train")


@pytest.fixture(scope="module")
def tiny_val():
    return read_source(TINY, "val")


@needs_tiny
def test_tiny_train_has_200_classes_of_300_images(tiny_train):
    wnids = (TINY / "wnids.txt").read_text().split()
    assert tiny_train.layout == "tiny-imagenet"
    assert tiny_train.classes == sorted(wnids) and len(wnids) == 200
    assert len(tiny_train) == 60_000
    assert set(tiny_train.counts().values()) == {300}
    assert all(tiny_train.classes[s.label] == s.wnid for s in tiny_train.samples)
    assert all(s.box is not None for s in tiny_train.samples)
    first = [s.path.name for s in tiny_train.samples[:12]]
    wnid = tiny_train.classes[0]
    assert first == [f"{wnid}_{i}.JPEG" for i in range(12)]  # natural order, not 0, 1, 10, 100
    assert tiny_train.samples[0].path.is_file()


@needs_tiny
def test_tiny_val_has_50_images_per_class(tiny_val, tiny_train):
    assert len(tiny_val) == 10_000
    assert tiny_val.classes == tiny_train.classes
    assert set(tiny_val.counts().values()) == {50}
    assert all(tiny_val.classes[s.label] == s.wnid for s in tiny_val.samples)


@needs_tiny
def test_tiny_boxes_become_half_open(tiny_train, tiny_val):
    wnid = tiny_train.classes[7]
    line = (TINY / "train" / wnid / f"{wnid}_boxes.txt").read_text().splitlines()[3].split()
    name, x0, y0, x1, y1 = line[0], *map(int, line[1:])
    sample = next(s for s in tiny_train.samples if s.path.name == name)
    assert sample.wnid == wnid
    assert sample.box == (x0, y0, x1 + 1, y1 + 1)

    name, vwnid, *coords = (
        (TINY / "val" / "val_annotations.txt").read_text().splitlines()[5].split()
    )
    x0, y0, x1, y1 = map(int, coords)
    sample = next(s for s in tiny_val.samples if s.path.name == name)
    assert (sample.wnid, sample.box) == (vwnid, (x0, y0, x1 + 1, y1 + 1))


@needs_tiny
def test_class_subset_relabels_in_sorted_order(tiny_train):
    picked = [tiny_train.classes[150], tiny_train.classes[3], tiny_train.classes[42]]
    sset = read_source(TINY, "train", classes=picked)
    assert sset.classes == sorted(picked)
    assert len(sset) == 900
    assert {s.label for s in sset.samples} == {0, 1, 2}
    assert all(sset.classes[s.label] == s.wnid for s in sset.samples)
    val = read_source(TINY, "val", classes=picked)
    assert val.counts() == {w: 50 for w in sorted(picked)}


@needs_tiny
def test_images_per_class_takes_the_first_n(tiny_train):
    picked = tiny_train.classes[:4]
    sset = read_source(TINY, "train", classes=picked, images_per_class=12)
    assert sset.counts() == {w: 12 for w in picked}
    assert [s.path.name for s in sset.samples[:12]] == [f"{picked[0]}_{i}.JPEG" for i in range(12)]
    with pytest.raises(InputError, match="images_per_class") as e:
        read_source(TINY, "train", classes=picked, images_per_class=301)
    assert "300" in str(e.value)


@needs_tiny
def test_unknown_wnid_is_named(tiny_train):
    with pytest.raises(InputError) as e:
        read_source(TINY, "train", classes=[tiny_train.classes[0], "n99999999"])
    assert "n99999999" in str(e.value) and "wnids.txt" in str(e.value)


@needs_tiny
def test_tiny_names_and_layout():
    names = read_class_names(TINY)
    assert len(names) == 200
    assert names["n02058221"] == "albatross, mollymawk"
    assert detect_source_layout(TINY) == "tiny-imagenet"


def test_detect_layout_of_empty_and_missing_folders(tmp_path):
    assert detect_source_layout(tmp_path) is None
    assert detect_source_layout(tmp_path / "absent") is None
    with pytest.raises(InputError, match="unknown layout"):
        read_source(tmp_path)


def _touch(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_imagefolder_tree(tmp_path):
    for wnid, n in (("n00000002", 3), ("n00000001", 11)):
        for i in range(n):
            _touch(tmp_path / "train" / wnid / f"img_{i}.JPEG")
    _touch(tmp_path / "train" / "n00000001" / "notes.txt")  # not an image
    _touch(tmp_path / "train" / "n00000002" / "x.png")
    _touch(tmp_path / "val" / "n00000002" / "v.jpg")
    _touch(
        tmp_path.parent / "LOC_synset_mapping.txt",
        "n00000001 one thing\nn00000002 another, thing\n",
    )
    assert detect_source_layout(tmp_path) == "imagefolder"

    train = read_source(tmp_path)
    assert train.layout == "imagefolder"
    assert train.classes == ["n00000001", "n00000002"]
    assert train.counts() == {"n00000001": 11, "n00000002": 4}
    assert [s.path.name for s in train.samples[:3]] == ["img_0.JPEG", "img_1.JPEG", "img_2.JPEG"]
    assert train.samples[-1].path.name == "x.png"
    assert all(s.box is None for s in train.samples)

    val = read_source(tmp_path, "val")  # labels follow the train split's classes
    assert val.classes == train.classes
    assert [(s.label, s.wnid) for s in val.samples] == [(1, "n00000002")]
    assert read_source(tmp_path, images_per_class=4).counts() == {"n00000001": 4, "n00000002": 4}
    assert read_class_names(tmp_path)["n00000002"] == "another, thing"

    _touch(tmp_path / "val" / "n00000009" / "stray.jpg")
    with pytest.raises(InputError, match="n00000009"):
        read_source(tmp_path, "val")
    with pytest.raises(InputError, match="split"):
        read_source(tmp_path, "test")


def _fake_tiny(root: Path, boxes: str | None = None) -> Path:
    """A two-class Tiny-ImageNet tree with empty image files (nothing opens them)."""
    wnids = ["n00000001", "n00000002"]
    _touch(root / "wnids.txt", "\n".join(wnids) + "\n")
    _touch(root / "words.txt", "n00000001\tfirst\nn00000002\tsecond\nn00000003\tunused\n")
    for wnid in wnids:
        for i in range(3):
            _touch(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
    default = "".join(f"n00000001_{i}.JPEG\t0\t1\t62\t63\n" for i in range(3))
    _touch(
        root / "train" / "n00000001" / "n00000001_boxes.txt", default if boxes is None else boxes
    )
    _touch(root / "val" / "images" / "val_0.JPEG")
    _touch(root / "val" / "val_annotations.txt", "val_0.JPEG\tn00000002\t0\t0\t9\t9\n")
    return root


def test_fake_tiny_tree_reads(tmp_path):
    root = _fake_tiny(tmp_path)
    sset = read_source(root)
    assert len(sset) == 6
    assert sset.samples[0].box == (0.0, 1.0, 63.0, 64.0)
    assert all(s.box is None for s in sset.samples if s.wnid == "n00000002")  # no boxes file
    assert read_class_names(root) == {"n00000001": "first", "n00000002": "second"}
    val = read_source(root, "val")
    assert [(s.path.name, s.label, s.box) for s in val.samples] == [
        ("val_0.JPEG", 1, (0.0, 0.0, 10.0, 10.0))
    ]


@pytest.mark.parametrize(
    "bad", ["n00000001_1.JPEG 0 1 62", "n00000001_1.JPEG 0 x 62 63", "n00000001_1.JPEG 9 1 2 63"]
)
def test_malformed_boxes_line_names_file_and_line(tmp_path, bad):
    boxes = f"n00000001_0.JPEG 0 1 62 63\n{bad}\nn00000001_2.JPEG 0 1 62 63\n"
    root = _fake_tiny(tmp_path, boxes)
    with pytest.raises(InputError) as e:
        read_source(root)
    message = str(e.value)
    assert "n00000001_boxes.txt" in message and "line 2" in message and bad.split()[2] in message

    skip = SkipLog(enabled=True)
    sset = read_source(root, skip_bad=skip)
    assert skip.by_kind() == {"bad box": 1}
    assert len(sset) == 6
    assert [s.box is None for s in sset.samples[:3]] == [False, True, False]


def test_missing_images_go_through_skip_bad(tmp_path):
    root = _fake_tiny(tmp_path)
    with (root / "val" / "val_annotations.txt").open("a") as f:
        f.write("val_1.JPEG\tn00000001\t0\t0\t9\t9\n")
    with pytest.raises(InputError, match="val_1.JPEG"):
        read_source(root, "val")
    skip = SkipLog(enabled=True)
    assert len(read_source(root, "val", skip_bad=skip)) == 1
    assert skip.by_kind() == {"missing image": 1}


def test_natural_key_orders_numbers():
    names = ["a_10.JPEG", "a_2.JPEG", "a_1.JPEG", "b.JPEG", "a_100.JPEG"]
    assert sorted(names, key=natural_key) == [
        "a_1.JPEG",
        "a_2.JPEG",
        "a_10.JPEG",
        "a_100.JPEG",
        "b.JPEG",
    ]
