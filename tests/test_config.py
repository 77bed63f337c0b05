"""Typed configs: YAML + overrides, round trip, and errors that name field, value, expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlt.config import apply_overrides, config_to_yaml, load_config
from mlt.errors import InputError


def test_defaults_are_the_papers() -> None:
    c = load_config()
    assert c.windows.scales == [1.0, 1.3, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6, 4.0]
    assert (c.windows.window_fraction, c.windows.box_fraction, c.windows.background_fraction) == (
        0.2,
        0.6,
        0.1,
    )
    assert c.eval.k == 5 and c.head.fca_width == 2048 and c.pretrain.lr == 0.01


def test_yaml_then_overrides(tmp_path: Path) -> None:
    p = tmp_path / "run.yaml"
    p.write_text("name: t\npretrain:\n  lr: 0.05\n  epochs: 3\nwindows:\n  scales: [1, 2]\n")
    c = load_config(
        p,
        [
            "pretrain.lr=0.02",
            "windows.scales=[1,2,4]",
            "eval.k=max",
            "data.subset.kind=random",
            "data.subset.n=100",
        ],
    )
    assert c.name == "t" and c.pretrain.lr == 0.02 and c.pretrain.epochs == 3
    assert c.windows.scales == [1, 2, 4] and c.eval.k == "max"
    assert c.data.subset.kind == "random" and c.data.subset.n == 100


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    c = load_config(None, ["head.optimizer=adamw", "extract.layers=[fc7, c5]"])
    p = tmp_path / "out.yaml"
    p.write_text(config_to_yaml(c))
    assert load_config(p) == c


@pytest.mark.parametrize(
    ("override", "field", "value", "expected"),
    [
        ("pretrain.lr=abc", "pretrain.lr", "abc", "valid number"),
        ("pretrain.lr=-1", "pretrain.lr", -1, "greater than 0"),
        ("pretrain.lr_typo=1", "pretrain.lr_typo", 1, "no such key"),
        ("windows.scales=[0.5, 1]", "windows.scales", [0.5, 1], "λ ≥ 1"),
        ("head.optimizer=adam", "head.optimizer", "adam", "one of 'sgd' or 'adamw'"),
        ("eval.k=0", "eval.k", 0, "k > 0"),
        ("bogus=1", "bogus", 1, "no such key"),
    ],
)
def test_bad_values_name_field_value_and_expectation(
    override: str, field: str, value, expected: str
) -> None:
    with pytest.raises(InputError) as info:
        load_config(None, [override])
    e = info.value
    assert e.field.startswith(field) and e.value == value
    assert expected in str(e) and "command-line overrides" in str(e)


def test_errors_in_a_file_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("pretrain:\n  epochs: many\n  workers: 0\n")
    with pytest.raises(InputError) as info:
        load_config(p)
    text = str(info.value)
    assert (
        str(p) in text
        and "pretrain.epochs" in text
        and "'many'" in text
        and "pretrain.workers" in text
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("pretrain: [1, 2\n", "valid YAML"),
        ("- a\n- b\n", "a mapping of sections"),
        ("pretrain: 3\n", "pretrain"),
    ],
)
def test_bad_yaml_files(tmp_path: Path, text: str, fragment: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(InputError) as info:
        load_config(p)
    assert fragment in str(info.value) and str(p) in str(info.value)


def test_missing_file_and_malformed_override(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="readable config file"):
        load_config(tmp_path / "none.yaml")
    with pytest.raises(InputError, match="KEY=VALUE"):
        load_config(None, ["pretrain.lr"])
    with pytest.raises(InputError, match="a section, not a value"):
        apply_overrides({"pretrain": 3}, ["pretrain.lr=1"])


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_every_shipped_run_config_validates(path) -> None:
    config = load_config(path)
    assert config.name and config.sweep.space.name.endswith(".yaml")
