"""Label maps: the shipped TinyVOC map against the data README, round trips, every validation error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from datapaths import SHARED_DATA as DATA

from mlt.data.labelmap import LabelMap, dump_label_map, load_label_map
from mlt.errors import InputError

TINYVOC_MAP = Path(__file__).resolve().parents[1] / "configs" / "labelmaps" / "tinyvoc.yaml"
needs_data = pytest.mark.skipif(
    not (DATA / "README.md").is_file() or not (DATA / "tiny-imagenet-200" / "wnids.txt").is_file(),
    reason=f"no data README / Tiny-ImageNet at {DATA}",
)


def readme_table() -> dict[str, list[str]]:
    """Returns the README's "VOC class | Tiny-ImageNet wnids" table as class -> wnids, in order."""
    table: dict[str, list[str]] = {}
    in_table = False
    for line in (DATA / "README.md").read_text().splitlines():
        cells = (
            [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        )
        if cells[:2] == ["VOC class", "Tiny-ImageNet wnids"]:
            in_table = True
        elif in_table and not cells:
            break
        elif in_table and not set(cells[0]) <= set("-: "):
            table[cells[0]] = re.findall(r"n\d{8}", cells[1])
    return table


@needs_data
def test_shipped_tinyvoc_map_matches_readme_table():
    wnids = (DATA / "tiny-imagenet-200" / "wnids.txt").read_text().split()
    lm = load_label_map(TINYVOC_MAP, known_wnids=wnids)
    table = readme_table()
    assert len(table) == 12
    assert lm.name == "tinyvoc"
    assert lm.num_classes == 12
    assert lm.target_classes == list(table)
    assert {c: set(w) for c, w in lm.sources.items()} == {c: set(w) for c, w in table.items()}
    related = lm.related_wnids()
    assert related == sorted(w for ws in table.values() for w in ws)
    # The README's prose says 31 related wnids, but its table (the source of truth here) lists 30.
    assert len(related) == 30
    assert set(related) <= set(wnids)
    assert lm.source_to_target()["n02099601"] == "dog"


def test_shipped_map_loads_without_data():
    lm = load_label_map(TINYVOC_MAP)
    assert lm.path == TINYVOC_MAP
    assert lm.target_classes[0] == "bird" and lm.target_classes[-1] == "train"
    assert "# albatross" in TINYVOC_MAP.read_text()


def test_round_trip(tmp_path):
    lm = LabelMap(
        None,
        ["dog", "yes", "pottedplant"],
        {"dog": ["n02085620", "n02094433"], "yes": ["n00000001"], "pottedplant": ["n00000002"]},
        name="demo",
    )
    out = tmp_path / "map.yaml"
    dump_label_map(lm, out, names={"n02085620": "Chihuahua"})
    back = load_label_map(out)
    assert (back.target_classes, back.sources, back.name) == (
        lm.target_classes,
        lm.sources,
        lm.name,
    )
    text = out.read_text()
    assert text.startswith("#") and "# Chihuahua, ?" in text and '"yes":' in text
    dump_label_map(load_label_map(TINYVOC_MAP), out)
    assert load_label_map(out).sources == load_label_map(TINYVOC_MAP).sources


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "field", "value", "kind"),
    [
        (
            "classes:\n  dog: [n02085620]\n  cat: [n02123045]\n  dog: [n02094433]\n",
            "classes.dog",
            "dog",
            "duplicate key",
        ),
        ("name: a\nname: b\nclasses:\n  dog: [n02085620]\n", "name", "name", "duplicate key"),
        (
            "classes:\n  dog: [n02085620, n02123045]\n  cat: [n02123045]\n",
            "classes.cat",
            "n02123045",
            "duplicate wnid",
        ),
        ("classes:\n  dog: [n02085620, n02085620]\n", "classes.dog", "n02085620", "duplicate wnid"),
        ("classes:\n  bird: [n02058221, n123]\n", "classes.bird[1]", "n123", "bad wnid"),
        ("classes:\n  bird: [n02058221, 2058221]\n", "classes.bird[1]", "2058221", "bad wnid"),
        ("classes:\n  bird: []\n", "classes.bird", "[]", "bad value"),
        ("classes:\n  bird: n02058221\n", "classes.bird", "n02058221", "bad value"),
        (
            "classes:\n  background: [n02058221]\n",
            "classes.background",
            "background",
            "bad class name",
        ),
        ("name: x\n", "classes", "None", "missing classes"),
        ("- a\n- b\n", None, "['a', 'b']", "bad label map"),
        ("clases:\n  bird: [n02058221]\n", "clases", "clases", "unknown key"),
        ("classes: [bird\n", "line 2", "", "malformed YAML"),
    ],
)
def test_validation_errors_name_field_and_value(tmp_path, text, field, value, kind):
    path = _write(tmp_path, text)
    with pytest.raises(InputError) as e:
        load_label_map(path)
    err = e.value
    assert (err.field, err.kind) == (field, kind)
    assert value in str(err) and str(path) in str(err)
    if field:
        assert f"field '{field}'" in str(err)


def test_wnid_under_two_classes_names_both(tmp_path):
    path = _write(tmp_path, "classes:\n  dog: [n02085620]\n  cat: [n02085620]\n")
    with pytest.raises(InputError, match=r"classes\.dog") as e:
        load_label_map(path)
    assert e.value.field == "classes.cat" and "n02085620" in str(e.value)


def test_unknown_wnids_with_known_set(tmp_path):
    path = _write(tmp_path, "classes:\n  dog: [n02085620, n00000009]\n  cat: [n00000008]\n")
    assert load_label_map(path).num_classes == 2
    with pytest.raises(InputError, match="label map names 2 unknown classes") as e:
        load_label_map(path, known_wnids=["n02085620"])
    assert e.value.field == "classes.dog" and e.value.value == "n00000009"
    assert "n00000008" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="missing file"):
        load_label_map(tmp_path / "absent.yaml")
