"""`mlt features list | show | verify | gc` on small stores, through click's test runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from featurestore_fixture import DIMS, corrupt_value, image_id, image_item, make_inputs, write_set

from featurestore import FeatureStore, NotFound
from mlt.cli.features import features


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    return FeatureStore(tmp_path / "features")


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(features, list(args), env=env, catch_exceptions=True)


@pytest.mark.parametrize("cmd", [[], ["list"], ["show"], ["verify"], ["gc"]])
def test_help(cmd: list[str]) -> None:
    result = run(*cmd, "--help")
    assert (
        result.exit_code == 0 and "Usage:" in result.output and len(result.output.splitlines()) > 4
    )


def test_list_text_and_json(store: FeatureStore) -> None:
    fs = write_set(store, 3)
    w = store.writer(make_inputs(mode="full"), DIMS)
    w.put(*image_item(0))
    w.abort()
    text = run("list", "--store", str(store.root))
    assert text.exit_code == 0, text.output
    line = next(x for x in text.output.splitlines() if x.startswith(fs.id))
    assert "complete" in line and "fc7:24" in line and "run-trunk" in line and "tinyvoc0" in line
    assert "partial" in text.output
    data = json.loads(run("list", "--store", str(store.root), "--json").output)
    assert {d["id"]: d["complete"] for d in data} == {fs.id: True, w.id: False}


def test_list_uses_the_store_from_the_environment(store: FeatureStore, tmp_path: Path) -> None:
    fs = write_set(store, 2)
    assert fs.id in run("list", env={"MLT_FEATURE_STORE": str(store.root)}).output
    assert "no feature sets" in run("list", "--store", str(tmp_path / "empty")).output


def test_show_prints_lineage_and_counts(store: FeatureStore) -> None:
    fs = write_set(store, 6)
    result = run("show", fs.id[:7], "--store", str(store.root))
    assert result.exit_code == 0, result.output
    out = result.output
    for text in (fs.id, "run-trunk", "sha256:trunk0", "sha256:tinyvoc0", "run-extract", "stride_fraction",
                 "fc7 (24 dims)", "c5 (8 dims)", "val: 2 images", "size on disk"):  # fmt: skip
        assert text in out, text
    assert (
        json.loads(run("show", fs.id, "--store", str(store.root), "--json").output)["id"] == fs.id
    )
    missing = run("show", "feedface", "--store", str(store.root))
    assert isinstance(missing.exception, NotFound)


def test_verify_exit_codes_and_the_bad_image(store: FeatureStore) -> None:
    fs = write_set(store, 8)
    ok = run("verify", fs.id, "--store", str(store.root))
    assert ok.exit_code == 0 and "ok" in ok.output
    corrupt_value(fs, image_id(5), "c5")
    bad = run("verify", fs.id, "--store", str(store.root))
    assert bad.exit_code == 1
    assert "'img0005' layer 'c5': checksum mismatch" in bad.output
    assert "img0004" not in bad.output and "1 bad images" in bad.output


def test_gc_dry_run_then_keep(store: FeatureStore) -> None:
    keep = write_set(store, 2)
    drop = write_set(store, 2, mode="other")
    w = store.writer(make_inputs(mode="partial"), DIMS)
    w.abort()
    dry = run("gc", "--store", str(store.root), "--keep", keep.id, "--dry-run")
    assert dry.exit_code == 0 and "would remove 2 folders" in dry.output
    assert store.exists(drop.id) and w.tmp.exists()
    result = run("gc", "--store", str(store.root), "--keep", keep.id)
    assert result.exit_code == 0 and f"removed {drop.path}" in result.output
    assert store.exists(keep.id) and not store.exists(drop.id) and not w.tmp.exists()
