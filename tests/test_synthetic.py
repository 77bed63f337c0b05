"""Synthetic demo data: the readers accept it, it is deterministic, and its classes are learnable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mlt.data.inspect import inspect_dataset
from mlt.data.labelmap import load_label_map
from mlt.data.source import read_class_names, read_source
from mlt.data.synthetic import (
    MARKER,
    class_pattern,
    make_demo_data,
    make_labelmap,
    make_source,
    make_target,
    source_wnid,
)
from mlt.data.voc import SPLITS, VocDataset
from mlt.errors import InputError

CLASSES = 10  # the demo's: 4 target classes take 8, two stay unrelated


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "source"
    return make_source(root, classes=CLASSES, train_per_class=10, val_per_class=6, size=32)


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "target"
    return make_target(root, n_train=12, n_val=8, n_test=12, source_classes=CLASSES)


def _digest(root: Path, names: list[str]) -> list[str]:
    return [hashlib.sha256((root / n).read_bytes()).hexdigest() for n in names]


def test_source_reads_as_tiny_imagenet(source):
    train = read_source(source, "train")
    val = read_source(source, "val")
    wnids = [source_wnid(i) for i in range(CLASSES)]
    assert train.layout == "tiny-imagenet"
    assert train.classes == val.classes == wnids == ["n90000000", *wnids[1:]]
    assert train.counts() == {w: 10 for w in wnids} and val.counts() == {w: 6 for w in wnids}
    assert all(s.box is not None for s in train.samples + val.samples)
    assert read_class_names(source)[wnids[1]] == class_pattern(1).name
    with Image.open(train.samples[0].path) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    x0, y0, x1, y1 = train.samples[0].box
    assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32 and (x1 - x0) >= 0.6 * 32 - 1


def test_target_passes_inspect_and_reads_every_split(target):
    (report,) = inspect_dataset(target, progress=False)
    assert report.problems == []
    assert report.splits == {"train": 12, "val": 8, "trainval": 20, "test": 12}
    ds = VocDataset(target)
    assert ds.classes == ("bird", "boat", "car", "cat")
    for split in SPLITS:
        anns = ds.load(split)
        assert len(anns) == report.splits[split]
        assert all(1 <= len(a.objects) <= 2 for a in anns)
        assert all(96 <= a.width <= 160 and 96 <= a.height <= 160 for a in anns)
        for a in anns:
            for o in a.objects:
                x0, y0, x1, y1 = o.box
                assert min(x1 - x0, y1 - y0) >= 0.35 * min(a.width, a.height) - 1
        # every class has a non-difficult object in every split
        assert {o.name for a in anns for o in a.objects if not o.difficult} == set(ds.classes)


def test_labelmap_maps_target_classes_to_source_patterns(tmp_path, source, target):
    path = make_labelmap(tmp_path / "labelmap.yaml", source_classes=CLASSES)
    known = read_source(source, "train").classes
    lm = load_label_map(path, known_wnids=known)
    assert lm.target_classes == list(VocDataset(target).classes)
    assert all(len(w) == 2 for w in lm.sources.values())
    assert set(known) - set(lm.related_wnids())  # some source classes stay unrelated
    assert "red stripes" in path.read_text()  # source names as comments


def test_same_seed_same_bytes_other_seed_differs(tmp_path, source, target):
    names = ["wnids.txt", "val/val_annotations.txt", "val/images/val_3.JPEG"]
    names.append(f"train/{source_wnid(2)}/images/{source_wnid(2)}_5.JPEG")
    again = make_source(
        tmp_path / "s", classes=CLASSES, train_per_class=10, val_per_class=6, size=32
    )
    assert _digest(again, names) == _digest(source, names)
    other = make_source(
        tmp_path / "o", CLASSES, train_per_class=10, val_per_class=6, size=32, seed=1
    )
    assert _digest(other, names[2:]) != _digest(source, names[2:])

    names = ["JPEGImages/000003.jpg", "Annotations/000007.xml", "ImageSets/Main/cat_test.txt"]
    kwargs = {"n_train": 12, "n_val": 8, "n_test": 12, "source_classes": CLASSES}
    assert _digest(make_target(tmp_path / "t", **kwargs), names) == _digest(target, names)
    other = make_target(tmp_path / "u", seed=1, **kwargs)
    assert all(a != b for a, b in zip(_digest(other, names), _digest(target, names), strict=True))


def test_nearest_class_mean_tells_the_patterns_apart(source):
    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        sset = read_source(source, split)
        x = []
        for s in sset.samples:
            with Image.open(s.path) as im:
                x.append(np.asarray(im.convert("RGB").resize((4, 4), Image.BILINEAR), np.float32))
        return np.stack(x).reshape(len(x), -1) / 255.0, np.array([s.label for s in sset.samples])

    x_train, y_train = features("train")
    x_val, y_val = features("val")
    means = np.stack([x_train[y_train == c].mean(0) for c in range(CLASSES)])
    predicted = ((x_val[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    accuracy = (predicted == y_val).mean()
    assert accuracy >= 0.6, accuracy  # chance is 0.1; ~0.94 with the demo's 100 per class


def test_make_demo_data_once_and_atomically(tmp_path):
    root = tmp_path / "demo"
    small = {"source_images": (6, 3), "target_images": (8, 8, 8)}
    paths = make_demo_data(root, **small)
    assert paths == {
        "source": root / "source",
        "target": root / "target",
        "labelmap": root / "labelmap.yaml",
    }
    lm = load_label_map(paths["labelmap"], read_source(paths["source"], "val").classes)
    assert lm.target_classes == list(VocDataset(paths["target"]).classes)
    assert len(read_source(paths["source"])) == 60
    assert (root / MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no temporary left over
    image = paths["target"] / "JPEGImages" / "000001.jpg"
    stamp = image.stat().st_mtime_ns
    assert make_demo_data(root, **small) == paths  # a no-op
    assert image.stat().st_mtime_ns == stamp
    before = image.read_bytes()
    make_demo_data(root, seed=1, **small)  # another seed replaces the set
    assert image.read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        make_demo_data(foreign, **small)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_cli_synth_prints_the_three_paths(tmp_path, monkeypatch):
    from mlt.cli import data as data_cmd

    calls = []

    def fake(root, seed):
        calls.append((root, seed))
        return {"source": root / "source", "target": root / "target", "labelmap": root / "l.yaml"}

    monkeypatch.setattr("mlt.data.synthetic.make_demo_data", fake)
    result = CliRunner().invoke(data_cmd.data, ["synth", "--dest", str(tmp_path), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert calls == [(tmp_path, 3)]
    assert result.output.splitlines() == [
        f"source: {tmp_path / 'source'}",
        f"target: {tmp_path / 'target'}",
        f"labelmap: {tmp_path / 'l.yaml'}",
    ]
