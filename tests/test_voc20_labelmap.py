"""The shipped VOC-20 -> ILSVRC-2012 label map: loads, VOC order, disjoint, well-formed wnids."""

from __future__ import annotations

import re
from pathlib import Path

from mlt.data.labelmap import load_label_map
from mlt.data.voc import VOC_CLASSES

VOC20_MAP = Path(__file__).resolve().parents[1] / "configs" / "labelmaps" / "voc20-ilsvrc.yaml"
WNID_RE = re.compile(r"^n\d{8}$")


def wnids_in_file() -> list[str]:
    """Returns every wnid written in the map's class rows (comments excluded), in file order."""
    found: list[str] = []
    for line in VOC20_MAP.read_text(encoding="utf-8").splitlines():
        found += re.findall(r"\bn\d{8}\b", line.split("#", 1)[0])
    return found


def test_voc20_map_loads_in_voc_order():
    lm = load_label_map(VOC20_MAP, known_wnids=wnids_in_file())
    assert lm.name == "voc20-ilsvrc"
    assert lm.num_classes == 20
    assert lm.target_classes == list(VOC_CLASSES)


def test_voc20_wnids_are_disjoint_and_well_formed():
    lm = load_label_map(VOC20_MAP)
    every = [w for cls in lm.target_classes for w in lm.sources[cls]]
    assert all(WNID_RE.match(w) for w in every)
    assert len(every) == len(set(every)), "a wnid is mapped to two classes"
    assert sorted(every) == sorted(wnids_in_file())
    assert lm.related_wnids() == sorted(every)
    assert len(every) == 243


def test_voc20_class_sizes():
    lm = load_label_map(VOC20_MAP)
    sizes = {cls: len(ws) for cls, ws in lm.sources.items()}
    assert sizes["dog"] == 118
    assert sizes["cat"] == 5
    assert sizes["bird"] == 59
    # The 118 breeds are ILSVRC's contiguous block Chihuahua .. Mexican hairless.
    assert lm.sources["dog"][0] == "n02085620" and lm.sources["dog"][-1] == "n02113978"
    to_target = lm.source_to_target()
    assert to_target["n02123045"] == "cat"  # tabby
    assert to_target["n02403003"] == "cow"  # ox
    assert to_target["n04344873"] == "sofa"  # studio couch
    assert "n02114367" not in to_target  # timber wolf is not a dog
    assert "n04335435" not in to_target  # streetcar: neither bus nor train


def test_voc20_map_comments_name_the_classes():
    text = VOC20_MAP.read_text(encoding="utf-8")
    for name in ("# airliner, warplane", "Chihuahua", "Mexican hairless", "studio couch"):
        assert name in text
