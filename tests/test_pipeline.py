"""The whole pipeline from one config on generated data: every stage runs, then every stage is
skipped on a second run with the same inputs; the demo falls back to synthetic data."""

from __future__ import annotations

import pytest

from mlt.config import load_config
from mlt.data.synthetic import make_demo_data
from mlt.demo import resolve_data, summary_text
from mlt.pipeline import STAGES, pretrain_digest, run_pipeline

pytestmark = pytest.mark.slow


def _config(tmp, data):
    return load_config("configs/demo.yaml", [
        f"run_dir={tmp / 'runs'}", f"extract.store={tmp / 'runs' / 'features'}",
        f"data.source={data['source']}", f"data.target={data['target']}", f"data.label_map={data['labelmap']}",
        "data.subset.kind=all", "data.subset.n=null", "data.subset.images_per_class=null", "data.target_limit=null",
        "pretrain.epochs=1", "extract.workers=1", "head.epochs=2",
    ])  # fmt: skip


def test_pipeline_runs_every_stage_then_skips_them_all(ray_session, tmp_path) -> None:
    data = make_demo_data(
        tmp_path / "synthetic", source_images=(30, 10), target_images=(12, 12, 16)
    )
    config = _config(tmp_path, data)
    said: list[str] = []
    first = run_pipeline(config, progress=False, echo=said.append)
    assert first["trunk"] and first["feature_set"] and first["head_run"]
    assert first["evaluation"]["mAP"] > 0 and first["promotion"]["accepted"]
    assert not any(line.startswith(tuple(f"{s}: skipped" for s in STAGES)) for line in said)

    said.clear()
    again = run_pipeline(config, progress=False, echo=said.append)
    skipped = [s for s in STAGES if any(line.startswith(f"{s}: skipped") for line in said)]
    assert skipped == list(STAGES)
    assert (again["trunk"], again["feature_set"], again["head_run"]) == (
        first["trunk"], first["feature_set"], first["head_run"],
    )  # fmt: skip
    text = summary_text(config, first, "synthetic")
    assert "@champion" in text and first["feature_set"] in text

    # A changed pretraining setting is another trunk: its digest differs.
    changed = config.model_copy(
        update={"pretrain": config.pretrain.model_copy(update={"epochs": 2})}
    )
    assert pretrain_digest(changed) != pretrain_digest(config)


def test_demo_uses_synthetic_data_when_the_shared_data_is_absent(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLT_DATA", raising=False)
    config = load_config("configs/demo.yaml", [f"run_dir={tmp_path}", "data.source=/nonexistent/a",
                                               "data.target=/nonexistent/b"])  # fmt: skip
    resolved, line = resolve_data(config)
    assert line.startswith("synthetic data")
    assert resolved.data.source.is_dir() and resolved.data.target.is_dir()
    assert resolved.data.subset.kind == "all"
