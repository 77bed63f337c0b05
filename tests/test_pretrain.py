"""Pretraining under Ray Train on real Tiny-ImageNet images: a tiny run, resume, MLflow."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from mlt.config import load_config

pytestmark = pytest.mark.slow


def tiny_config(tmp_path: Path, tiny_imagenet_root: Path, *extra: str):
    return load_config(
        None,
        [
            f"run_dir={tmp_path / 'runs'}",
            "name=tiny",
            f"data.source={tiny_imagenet_root}",
            "data.label_map=configs/labelmaps/tinyvoc.yaml",
            "data.subset.kind=related",
            "data.subset.n=4",
            "data.subset.images_per_class=24",
            "pretrain.model=alexnet-small",
            "pretrain.batch_size=16",
            "pretrain.epochs=2",
            "pretrain.workers=2",
            "pretrain.loader=reference",
            "pretrain.loader_workers=0",
            *extra,
        ],
    )


def test_pretrain_two_workers_then_resume(
    ray_session, tmp_path: Path, tiny_imagenet_root: Path, monkeypatch
) -> None:
    from mlt.train.pretrain import run_pretrain

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    config = tiny_config(tmp_path, tiny_imagenet_root)
    first = run_pretrain(config)
    m = first["metrics"]
    assert first["classes"] == 4 and first["epochs"] == 2
    assert m["epoch"] == 1 and m["resumed_from_epoch"] == 0
    assert m["rank_weight_spread"] == 0.0  # DDP: both ranks hold identical weights after the steps
    assert 0.0 <= m["val_top1"] <= m["val_top5"] <= 1.0
    assert (
        m["val_images"] == 4 * 50 // 2 * 2
    )  # each of 2 ranks evaluates half of the 200 val images
    assert m["train_images"] == 2 * (4 * 24 // 2 // 16) * 16  # full batches only, on each rank

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    run = client.get_run(first["run_id"])
    assert run.data.params["pretrain.model"] == "alexnet-small"
    assert (
        run.data.tags["mlt.subset.kind"] == "related"
        and run.data.tags["mlt.trunk.digest"] == first["trunk_digest"]
    )
    history = client.get_metric_history(first["run_id"], "train_loss")
    assert [h.step for h in history] == [0, 1]
    versions = client.search_model_versions("name='trunk-tiny'")
    assert len(versions) == 1
    assert versions[0].tags["subset.kind"] == "related" and versions[0].tags["subset.size"] == "4"
    assert versions[0].tags["trunk.digest"] == first["trunk_digest"]

    # the same run with more epochs continues from its last checkpoint
    more = run_pretrain(tiny_config(tmp_path, tiny_imagenet_root, "pretrain.epochs=3"))
    assert more["metrics"]["resumed_from_epoch"] == 2 and more["epochs"] == 3
    # the first run had finished, so the continuation is a new MLflow run holding epoch 2 only
    before = client.get_metric_history(first["run_id"], "train_loss")
    after = client.get_metric_history(more["run_id"], "train_loss")
    assert [h.step for h in after] == [2]
    assert after[-1].value < before[0].value  # the loss falls

    # the same name with other settings must not continue this run's checkpoints
    from mlt.errors import InputError

    with pytest.raises(InputError, match="resume mismatch"):
        run_pretrain(tiny_config(tmp_path, tiny_imagenet_root, "pretrain.lr=0.5"))


def test_killed_worker_restarts_from_last_checkpoint(
    ray_session, tmp_path: Path, tiny_imagenet_root: Path, monkeypatch
) -> None:
    from mlt.train.pretrain import FAULT_ENV, run_pretrain

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    marker = tmp_path / "killed"
    monkeypatch.setenv(FAULT_ENV, f"1:1:{marker}")  # SIGKILL rank 1 at the start of epoch 1
    out = run_pretrain(
        tiny_config(tmp_path, tiny_imagenet_root, "pretrain.epochs=2", "name=faulty"),
        register=False,
    )
    assert marker.exists()  # the fault really happened
    assert out["epochs"] == 2 and out["metrics"]["epoch"] == 1
    assert (
        out["metrics"]["resumed_from_epoch"] == 1
    )  # the restarted group loaded epoch 0's checkpoint
