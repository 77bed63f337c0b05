"""Class subsets for pretraining: seeded draws, related/unrelated splits, validation."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from datapaths import SHARED_DATA as DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from mlt.data.labelmap import LabelMap, load_label_map
from mlt.data.subsets import SUBSET_KINDS, select_classes, subset_digest
from mlt.errors import InputError

WNIDS_FILE = DATA / "tiny-imagenet-200" / "wnids.txt"
TINYVOC_MAP = Path(__file__).resolve().parents[1] / "configs" / "labelmaps" / "tinyvoc.yaml"
needs_tiny = pytest.mark.skipif(
    not WNIDS_FILE.is_file(), reason=f"no Tiny-ImageNet at {WNIDS_FILE}"
)

POOL = [f"n{i:08d}" for i in range(1, 41)]
SMALL_MAP = LabelMap(None, ["a", "b"], {"a": ["n00000003", "n00000011"], "b": ["n00000020"]})


@pytest.fixture(scope="module")
def tiny():
    wnids = WNIDS_FILE.read_text().split()
    return wnids, load_label_map(TINYVOC_MAP, known_wnids=wnids)


def test_all_is_everything_sorted_minus_exclude():
    shuffled = random.Random(1).sample(POOL, len(POOL))
    assert select_classes(shuffled, "all") == POOL
    assert select_classes(shuffled, "all", exclude=["n00000001"]) == POOL[1:]


def test_random_is_seeded_and_order_independent():
    first = select_classes(POOL, "random", n=10, seed=3)
    assert first == select_classes(list(reversed(POOL)), "random", n=10, seed=3)
    assert first == select_classes(POOL + POOL[:5], "random", n=10, seed=3)  # duplicates ignored
    assert first != select_classes(POOL, "random", n=10, seed=4)
    assert len(first) == 10 and first == sorted(first) and set(first) <= set(POOL)
    assert not set(select_classes(POOL, "random", n=30, exclude=POOL[:10])) & set(POOL[:10])


def test_related_small_map():
    related = {"n00000003", "n00000011", "n00000020"}
    assert select_classes(POOL, "related", label_map=SMALL_MAP) == sorted(related)
    two = select_classes(POOL, "related", n=2, seed=5, label_map=SMALL_MAP)
    assert len(two) == 2 and set(two) <= related
    ten = select_classes(POOL, "related", n=10, seed=5, label_map=SMALL_MAP, exclude=["n00000001"])
    assert len(ten) == 10 and related <= set(ten) and "n00000001" not in ten
    assert select_classes(POOL, "unrelated", label_map=SMALL_MAP) == [
        w for w in POOL if w not in related
    ]
    unrelated = select_classes(POOL, "unrelated", n=5, seed=1, label_map=SMALL_MAP)
    assert len(unrelated) == 5 and not set(unrelated) & related


@needs_tiny
def test_tinyvoc_related_and_unrelated(tiny):
    wnids, lm = tiny
    related = select_classes(wnids, "related", label_map=lm)
    assert related == lm.related_wnids() and len(related) == 30  # the README table lists 30
    unrelated = select_classes(wnids, "unrelated", label_map=lm)
    assert len(unrelated) == 200 - len(related) == 170
    assert not set(related) & set(unrelated)
    assert sorted(related + unrelated) == sorted(wnids)

    hundred = select_classes(wnids, "related", n=100, seed=0, label_map=lm)
    others = set(hundred) - set(related)
    assert len(hundred) == 100 and set(related) <= set(hundred)
    assert len(others) == 70 and others <= set(unrelated)
    assert hundred == select_classes(list(reversed(wnids)), "related", n=100, seed=0, label_map=lm)

    exclude = unrelated[:24]
    assert len(select_classes(wnids, "unrelated", label_map=lm, exclude=exclude)) == 170 - 24
    assert not set(select_classes(wnids, "random", n=100, exclude=exclude)) & set(exclude)


def test_list_kind():
    assert select_classes(POOL, "list", classes=["n00000009", "n00000002", "n00000009"]) == [
        "n00000002",
        "n00000009",
    ]
    with pytest.raises(InputError) as e:
        select_classes(POOL, "list", classes=["n00000002", "n99999999"])
    assert (e.value.field, e.value.value) == ("subset.classes", "n99999999")
    with pytest.raises(InputError, match="subset.classes"):
        select_classes(POOL, "list")
    with pytest.raises(InputError, match="subset.exclude"):
        select_classes(POOL, "list", classes=["n00000002"], exclude=["n00000002"])


@pytest.mark.parametrize(
    ("kwargs", "field", "value"),
    [
        ({"kind": "randm", "n": 3}, "subset.kind", "randm"),
        ({"kind": "random"}, "subset.n", None),
        ({"kind": "random", "n": 0}, "subset.n", 0),
        ({"kind": "random", "n": 41}, "subset.n", 41),
        ({"kind": "random", "n": 2.5}, "subset.n", 2.5),
        ({"kind": "random", "n": True}, "subset.n", True),
        ({"kind": "all", "n": 10}, "subset.n", 10),
        ({"kind": "random", "n": 3, "seed": -1}, "subset.seed", -1),
        ({"kind": "related"}, "data.label_map", None),
        ({"kind": "related", "n": 41, "label_map": SMALL_MAP}, "subset.n", 41),
        ({"kind": "unrelated", "n": 38, "label_map": SMALL_MAP}, "subset.n", 38),
        ({"kind": "all", "exclude": ["n77777777"]}, "subset.exclude", "n77777777"),
        (
            {"kind": "related", "label_map": SMALL_MAP, "exclude": ["n00000020"]},
            "data.label_map",
            ["n00000020"],
        ),
    ],
)
def test_bad_arguments_name_field_and_value(kwargs, field, value):
    with pytest.raises(InputError) as e:
        select_classes(POOL, **kwargs)
    assert (e.value.field, e.value.value) == (field, value)
    assert f"field '{field}'" in str(e.value) and repr(value) in str(e.value)


def test_related_wnids_missing_from_source_set():
    lm = LabelMap(Path("map.yaml"), ["a"], {"a": ["n00000003", "n55555555"]})
    with pytest.raises(InputError, match="unknown classes") as e:
        select_classes(POOL, "related", label_map=lm)
    assert e.value.value == "n55555555" and e.value.file == "map.yaml"


def test_subset_digest():
    digest = subset_digest(POOL[:5])
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert digest == subset_digest(list(reversed(POOL[:5])))
    assert digest != subset_digest(POOL[:6])


@settings(max_examples=60, deadline=None)
@given(
    pool=st.sets(st.integers(0, 10**8 - 1), min_size=1, max_size=60).map(
        lambda s: [f"n{i:08d}" for i in s]
    ),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_draw_properties(pool, data, seed):
    n = data.draw(st.integers(1, len(pool)))
    shuffled = data.draw(st.permutations(pool))
    result = select_classes(shuffled, "random", n=n, seed=seed)
    assert len(result) == n == len(set(result))
    assert set(result) <= set(pool)
    assert result == sorted(result)
    assert result == select_classes(pool, "random", n=n, seed=seed)


def test_kinds_constant():
    assert SUBSET_KINDS == ("all", "random", "related", "unrelated", "list")
