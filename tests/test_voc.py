"""VOC devkit reader: real lists, box conversion, and the bad-input catalogue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from vocfixture import Img, Obj, annotation_xml, small_voc, write_voc

from mlt.data import voc
from mlt.errors import InputError, SkipLog

# The devkit's published statistics: images with at least one non-difficult object.
OFFICIAL_VOC2007 = {
    "aeroplane": (238, 204),
    "car": (713, 721),
    "chair": (445, 417),
    "person": (2008, 2007),
}


@pytest.mark.parametrize("cls", sorted(OFFICIAL_VOC2007))
def test_voc2007_positive_image_counts_match_official_statistics(
    voc2007_lists: Path, cls: str
) -> None:
    trainval = voc.read_label_list(voc2007_lists / f"{cls}_trainval.txt")
    test = voc.read_label_list(voc2007_lists / f"{cls}_test.txt")
    counts = (sum(v == 1 for v in trainval.values()), sum(v == 1 for v in test.values()))
    assert counts == OFFICIAL_VOC2007[cls]


def test_voc2007_lists_are_crlf_and_read_whole(voc2007_lists: Path) -> None:
    assert b"\r\n" in (voc2007_lists / "trainval.txt").read_bytes()
    trainval = voc.read_id_list(voc2007_lists / "trainval.txt")
    test = voc.read_id_list(voc2007_lists / "test.txt")
    assert (len(trainval), len(test)) == (5011, 4952)
    assert all("\r" not in i for i in trainval)
    assert voc.discover_classes(voc2007_lists) == sorted(voc.VOC_CLASSES)
    # every class list covers exactly the split's ids
    assert set(voc.read_label_list(voc2007_lists / "dog_test.txt")) == set(test)


def test_tinyvoc_annotations_parse_with_its_twelve_classes(tinyvoc_root: Path) -> None:
    ds = voc.VocDataset(tinyvoc_root)
    assert ds.num_classes == 12 and "dog" in ds.classes and "person" not in ds.classes
    ann = ds.annotation("000001")
    raw = (tinyvoc_root / "Annotations" / "000001.xml").read_text()
    xmin = int(raw.split("<xmin>")[1].split("<")[0])
    xmax = int(raw.split("<xmax>")[1].split("<")[0])
    assert ann.objects[0].box[0] == xmin - 1 and ann.objects[0].box[2] == xmax
    assert ds.image_path("000001").name == "000001.jpg"


def test_boxes_convert_from_one_based_inclusive(tmp_path: Path) -> None:
    root = small_voc(tmp_path / "voc")
    ds = voc.VocDataset(root)
    ann = ds.annotation("000001")
    assert ann.objects[0].box == (4.0, 4.0, 30.0, 30.0)  # VOC (5,5,30,30) → 26 px wide, half-open
    full = ds.annotation("000003")
    assert full.objects[0].box == (0.0, 0.0, 40.0, 40.0) and full.objects[0].truncated
    two = ds.annotation("000002")
    np.testing.assert_array_equal(two.class_indices(ds.classes), [1, 0])
    np.testing.assert_array_equal(two.difficult(), [False, True])
    assert two.boxes().shape == (2, 4) and two.boxes().dtype == np.float32


def test_image_level_labels_follow_the_devkit_rule(tmp_path: Path) -> None:
    root = small_voc(tmp_path / "voc")
    ds = voc.VocDataset(root)
    anns = ds.load("test")
    labels = voc.image_level_labels(anns, ds.classes)
    # 000006 has a cat; 000007 only a difficult dog → 0
    np.testing.assert_array_equal(labels, [[1, -1], [-1, 0]])
    listed = ds.class_labels("dog", "test")
    assert listed == {"000006": -1, "000007": 0}


def test_split_files_tolerate_crlf_and_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "s.txt"
    p.write_bytes(b"000001\r\n\r\n000002 \r\n")
    assert voc.read_id_list(p) == ["000001", "000002"]


# ---- the bad-input catalogue: each a clear error naming file, field and value ----


def _err(func, *args, **kwargs) -> InputError:
    with pytest.raises(InputError) as info:
        func(*args, **kwargs)
    return info.value


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "train.txt"
    p.write_text("\r\n\n")
    e = _err(voc.read_id_list, p)
    assert e.kind == "empty split" and str(p) in str(e)


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    p = tmp_path / "train.txt"
    p.write_text("000001\n000002\n000001\n")
    e = _err(voc.read_id_list, p)
    assert e.field == "line 3" and e.value == "000001" and "line 1" in str(e)


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/b", "..", "/abs", "x\\y"])
def test_ids_with_path_separators_are_refused(tmp_path: Path, bad: str) -> None:
    p = tmp_path / "train.txt"
    p.write_text(f"000001\n{bad}\n")
    e = _err(voc.read_id_list, p)
    assert e.value == bad and e.field == "line 2" and "path separators" in str(e)


def test_bad_class_list_line(tmp_path: Path) -> None:
    p = tmp_path / "cat_train.txt"
    p.write_text("000001  1\n000002  2\n")
    e = _err(voc.read_label_list, p)
    assert e.field == "line 2" and "000002 2" in str(e)


def _one(tmp_path: Path, xml: str) -> Path:
    p = tmp_path / "000001.xml"
    p.write_text(xml)
    return p


def test_malformed_xml(tmp_path: Path) -> None:
    p = _one(tmp_path, "<annotation><size><width>10</width></size>")
    e = _err(voc.parse_annotation, p)
    assert e.kind == "malformed XML" and str(p) in str(e) and e.field.startswith("line")


@pytest.mark.parametrize(
    "xml",
    [
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]>'
        "<annotation>&y;</annotation>",
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><annotation>&e;</annotation>',
    ],
    ids=["entity-expansion", "external-entity"],
)
def test_xml_entities_are_refused(tmp_path: Path, xml: str) -> None:
    e = _err(voc.parse_annotation, _one(tmp_path, xml))
    assert e.kind == "unsafe XML"


def test_missing_annotation(tmp_path: Path) -> None:
    e = _err(voc.parse_annotation, tmp_path / "nope.xml")
    assert e.kind == "missing annotation" and "nope.xml" in str(e)


@pytest.mark.parametrize(
    ("obj", "field", "kind"),
    [
        (Obj("cat", 10, 10, 70, 20), "object[0].bndbox", "bad box"),  # beyond the 64 px width
        (Obj("cat", 0, 10, 20, 20), "object[0].bndbox", "bad box"),  # VOC is 1-based: 0 is outside
        (Obj("cat", 30, 10, 20, 20), "object[0].bndbox", "bad box"),  # inverted
        (Obj("cat", 10, 10, 9, 20), "object[0].bndbox", "bad box"),  # zero width
        (Obj("horse", 1, 1, 5, 5), "object[0].name", "unknown class"),
    ],
)
def test_bad_objects_name_field_and_value(tmp_path: Path, obj: Obj, field: str, kind: str) -> None:
    p = _one(tmp_path, annotation_xml(Img("000001", 64, 48, [obj])))
    e = _err(voc.parse_annotation, p, ["cat", "dog"])
    assert (e.field, e.kind) == (field, kind) and str(p) in str(e)
    assert str(obj.xmin) in str(e.value) or e.value == obj.name


def test_non_numeric_box_and_bad_size(tmp_path: Path) -> None:
    xml = annotation_xml(Img("000001", 64, 48, [Obj("cat", 1, 1, 5, 5)])).replace(
        "<xmax>5</xmax>", "<xmax>five</xmax>"
    )
    e = _err(voc.parse_annotation, _one(tmp_path, xml))
    assert e.field == "object[0].bndbox.xmax" and e.value == "five"
    xml = annotation_xml(Img("000001", 0, 48))
    e = _err(voc.parse_annotation, _one(tmp_path, xml))
    assert e.kind == "bad size"


def test_skip_bad_counts_and_keeps_good_objects(tmp_path: Path) -> None:
    p = _one(
        tmp_path,
        annotation_xml(
            Img(
                "000001",
                64,
                48,
                [Obj("cat", 1, 1, 5, 5), Obj("cat", 30, 1, 20, 5), Obj("emu", 1, 1, 5, 5)],
            )
        ),
    )
    skip = SkipLog(enabled=True)
    ann = voc.parse_annotation(p, ["cat"], skip)
    assert len(ann.objects) == 1 and skip.count == 2
    assert skip.by_kind() == {"bad box": 1, "unknown class": 1}
    assert "2 skipped" in skip.summary()


def test_missing_image_and_annotation_in_a_split(tmp_path: Path) -> None:
    root = small_voc(tmp_path / "voc")
    (root / "JPEGImages" / "000002.jpg").unlink()
    (root / "Annotations" / "000003.xml").unlink()
    ds = voc.VocDataset(root)
    e = _err(ds.load, "train")
    assert e.kind == "missing image" and e.value == "000002"
    skipping = voc.VocDataset(root, skip_bad=SkipLog(enabled=True))
    assert [a.image_id for a in skipping.load("train")] == ["000001"]
    assert skipping.skip_bad.by_kind() == {"missing image": 1, "missing annotation": 1}


def test_not_a_voc_folder(tmp_path: Path) -> None:
    e = _err(voc.VocDataset, tmp_path)
    assert e.kind == "not a VOC dataset" and str(tmp_path) in str(e)


def test_action_layout_reads_person_boxes_and_actions(tmp_path: Path) -> None:
    root = write_voc(tmp_path / "voc", ["person"], {"train": [Img("2010_000001", 64, 48)]})
    xml = (
        "<annotation><filename>2010_000001.jpg</filename><size><width>64</width><height>48</height></size>"
        "<object><name>person</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>30</xmax><ymax>40</ymax></bndbox>"
        "<actions><jumping>1</jumping><phoning>0</phoning><running>1</running></actions></object>"
        "<object><name>person</name><bndbox><xmin>31</xmin><ymin>3</ymin><xmax>60</xmax><ymax>40</ymax></bndbox>"
        "<actions><jumping>0</jumping><reading>1</reading></actions></object></annotation>"
    )
    (root / "Annotations" / "2010_000001.xml").write_text(xml)
    action_dir = root / "ImageSets" / "Action"
    action_dir.mkdir(parents=True)
    (action_dir / "train.txt").write_text("2010_000001 1\r\n2010_000001 2\r\n")
    (action_dir / "jumping_train.txt").write_text("2010_000001  1  1\r\n2010_000001  2 -1\r\n")
    anns = voc.read_actions(root, "train")
    assert len(anns) == 1 and len(anns[0].objects) == 2
    assert anns[0].objects[0].actions == ("jumping", "running")
    assert anns[0].objects[0].box == (1.0, 2.0, 30.0, 40.0)
    assert voc.read_action_labels(root, "jumping", "train") == {
        ("2010_000001", 1): 1,
        ("2010_000001", 2): -1,
    }


def test_input_errors_survive_pickling() -> None:
    import pickle

    err = InputError("a.xml", "object[0].bndbox", "(1, 2)", "a box", kind="bad box")
    back = pickle.loads(pickle.dumps(err))
    assert (
        type(back) is InputError
        and str(back) == str(err)
        and back.kind == "bad box"
        and back.field == err.field
    )


def test_limit_keeps_the_first_ids_of_each_split_and_trainval_is_their_union(tmp_path) -> None:
    from vocfixture import small_voc

    from mlt.data.voc import VocDataset

    root = small_voc(tmp_path / "voc")
    full, one = VocDataset(root), VocDataset(root, limit=1)
    assert one.ids("train") == full.ids("train")[:1] and one.ids("test") == full.ids("test")[:1]
    assert one.ids("trainval") == full.ids("train")[:1] + full.ids("val")[:1]
    assert [a.image_id for a in one.iter_annotations("trainval")] == one.ids("trainval")
