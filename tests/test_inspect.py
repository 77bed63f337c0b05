"""`mlt data inspect` on the real TinyVOC and Tiny-ImageNet, and on broken fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vocfixture import small_voc

from mlt.cli import main
from mlt.data.inspect import detect_layout, inspect_dataset

TINYVOC_CLASSES = [
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "sheep",
    "train",
]


def run_json(capsys, *args: str) -> tuple[int, list[dict]]:
    code = main(["data", "inspect", "--json", "--no-progress", *args])
    return code, json.loads(capsys.readouterr().out)


def test_tinyvoc_figures(capsys, tinyvoc_root: Path) -> None:
    code, (report,) = run_json(capsys, str(tinyvoc_root))
    assert code == 0, report["problems"][:5]
    assert report["layout"] == "voc"
    assert report["num_classes"] == 12 and sorted(report["classes"]) == TINYVOC_CLASSES
    assert report["splits"]["trainval"] == 2500 and report["splits"]["test"] == 2500
    assert report["splits"]["train"] + report["splits"]["val"] == 2500
    size = report["image_size"]
    assert 128 <= size["min_width"] <= size["max_width"] <= 224
    assert report["images_size_checked"] == 5000
    total = sum(row["trainval objects"] for row in report["classes"].values())
    assert 2500 <= total <= 4 * 2500  # 1-4 labelled objects per scene
    assert any(row["test difficult"] for row in report["classes"].values())
    assert any(row["trainval truncated"] for row in report["classes"].values())


def test_text_report_and_exit_code(capsys, tinyvoc_root: Path) -> None:
    assert main(["data", "inspect", "--no-progress", "--no-images", str(tinyvoc_root)]) == 0
    out = capsys.readouterr().out
    assert "classes: 12" in out and "trainval 2,500 images" in out and "test 2,500 images" in out
    assert "problems: none" in out


def test_tiny_imagenet_layout(capsys, tiny_imagenet_root: Path) -> None:
    code, (report,) = run_json(capsys, "--sample", "200", str(tiny_imagenet_root))
    assert report["layout"] == "tiny-imagenet"
    assert report["splits"]["train"] == 60000 and report["splits"]["val"] == 10000
    assert report["num_classes"] == 200
    assert report["image_size"] == {
        "min_width": 64,
        "max_width": 64,
        "min_height": 64,
        "max_height": 64,
    }
    assert code == 0, report["problems"][:5]


def test_problems_are_listed_and_exit_code_is_1(capsys, tmp_path: Path) -> None:
    root = small_voc(tmp_path / "voc")
    (root / "JPEGImages" / "000004.jpg").unlink()
    (root / "JPEGImages" / "000006.jpg").write_bytes(b"not a jpeg")
    xml = (root / "Annotations" / "000001.xml").read_text()
    (root / "Annotations" / "000001.xml").write_text(
        xml.replace("<xmax>30</xmax>", "<xmax>300</xmax>")
    )
    (root / "Annotations" / "000005.xml").write_text("<annotation>")
    (root / "ImageSets/Main/dog_train.txt").write_text("000001 1\n000002 1\n000003 1\n")
    code, (report,) = run_json(capsys, str(root))
    assert code == 1
    problems = "\n".join(report["problems"])
    assert "000004" in problems and "missing image" in problems
    assert "000006.jpg" in problems and "bad image" in problems
    assert "000001.xml" in problems and "object[0].bndbox" in problems and "300" in problems
    assert "000005.xml" in problems and "malformed XML" in problems
    assert "dog_train.txt" in problems and "disagree" in problems


def test_vocdevkit_folder_holds_several(tmp_path: Path) -> None:
    small_voc(tmp_path / "VOCdevkit" / "VOC2007")
    small_voc(tmp_path / "VOCdevkit" / "VOC2012")
    assert detect_layout(tmp_path / "VOCdevkit") == "vocdevkit"
    reports = inspect_dataset(tmp_path / "VOCdevkit", progress=False)
    assert [r.root.name for r in reports] == ["VOC2007", "VOC2012"]
    assert all(
        r.ok and r.splits == {"train": 3, "val": 2, "trainval": 5, "test": 2} for r in reports
    )
    assert reports[0].per_class["dog"] == {
        "trainval images": 3, "trainval objects": 4, "trainval difficult": 0, "trainval truncated": 1,
        "test images": 1, "test objects": 1, "test difficult": 1, "test truncated": 0,
    }  # fmt: skip


def test_unknown_layout_and_missing_root(capsys, tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    assert main(["data", "inspect", str(tmp_path)]) == 2
    assert "unknown layout" in capsys.readouterr().err
    assert main(["data", "inspect", str(tmp_path / "nope")]) == 2
    assert "missing folder" in capsys.readouterr().err


@pytest.mark.parametrize("split", ["trainval", "test"])
def test_split_with_traversal_id_is_a_problem(capsys, tmp_path: Path, split: str) -> None:
    root = small_voc(tmp_path / "voc")
    path = root / "ImageSets/Main" / f"{split}.txt"
    path.write_text(path.read_text() + "../../etc/passwd\n")
    code, (report,) = run_json(capsys, str(root))
    assert code == 1 and any(
        "../../etc/passwd" in p and "path separators" in p for p in report["problems"]
    )
