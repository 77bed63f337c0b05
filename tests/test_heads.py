"""Heads on cached features: training rows, training with early stopping, the train-head and
evaluate commands end to end (feature store on disk, MLflow on SQLite)."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import torch
from headfixture import CLASSES, make_voc, write_feature_set

from featurestore import FeatureStore
from mlt.cli import main
from mlt.config import HeadConfig, load_config
from mlt.errors import InputError
from mlt.heads.artifact import load_head, save_head
from mlt.heads.data import load_windows, split_image_ids, training_rows
from mlt.heads.model import Head, window_probs
from mlt.heads.train import evaluate_head, ground_truth, train_head


@pytest.fixture(scope="module")
def heads_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("heads")
    voc = make_voc(tmp / "voc")
    set_id = write_feature_set(tmp / "store", voc, noise=1.0)
    return tmp, voc, set_id


def _data(tmp, voc, set_id, split):
    fs = FeatureStore(tmp / "store").open(set_id)
    return load_windows(fs, split_image_ids(voc, split), "fc7", tmp / "cache")


def test_training_rows_take_every_positive_and_a_tenth_of_background() -> None:
    labels = np.array([0, 1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, -1, -2, 2] + [3] * 10)
    rows = training_rows(labels, 3, np.random.default_rng(0), 0.1)
    positives = np.flatnonzero((labels >= 0) & (labels < 3))
    assert positives.tolist() == [0, 1, 14] and set(positives) <= set(rows.tolist())
    assert not set(rows.tolist()) & {12, 13}  # ignored windows never drawn
    assert (labels[rows] == 3).sum() == round(0.1 * 20)
    again = training_rows(labels, 3, np.random.default_rng(0), 0.1)
    other = [tuple(training_rows(labels, 3, np.random.default_rng(s), 0.1)) for s in range(1, 8)]
    assert np.array_equal(rows, again) and len(set(other)) > 1


def test_head_learns_and_keeps_its_best_epoch(heads_setup) -> None:
    tmp, voc, set_id = heads_setup
    train, val = _data(tmp, voc, set_id, "train"), _data(tmp, voc, set_id, "val")
    gt = ground_truth(voc, val.image_ids, CLASSES)
    hc = HeadConfig(fca_width=16, epochs=6, lr=0.05, batch_size=64, patience=6)
    result = train_head(train, val, hc, CLASSES, gt, k=5.0)
    assert len(result.history) == 6
    assert result.best_val_map == max(h["val_mAP"] for h in result.history)
    assert result.history[result.best_epoch - 1]["val_mAP"] == result.best_val_map
    # The returned weights are the best epoch's: re-scoring gives its mAP.
    assert evaluate_head(result.model, val, gt, CLASSES, 5.0).mean_ap == pytest.approx(
        result.best_val_map
    )
    assert result.best_val_map > 0.9
    untrained = evaluate_head(Head(train.dim, 3, 16), val, gt, CLASSES, 5.0).mean_ap
    assert result.best_val_map > untrained


def test_training_stops_after_patience_epochs_without_improvement(heads_setup) -> None:
    tmp, voc, set_id = heads_setup
    train, val = _data(tmp, voc, set_id, "train"), _data(tmp, voc, set_id, "val")
    gt = ground_truth(voc, val.image_ids, CLASSES)
    hc = HeadConfig(fca_width=8, epochs=20, lr=1e-12, batch_size=64, patience=2, optimizer="sgd")
    result = train_head(train, val, hc, CLASSES, gt)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


def test_same_seed_same_head_and_background_redrawn_per_epoch(heads_setup) -> None:
    tmp, voc, set_id = heads_setup
    train = _data(tmp, voc, set_id, "train")
    hc = HeadConfig(fca_width=8, epochs=2, batch_size=64)
    a, b = train_head(train, None, hc, CLASSES), train_head(train, None, hc, CLASSES)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    from mlt.heads.train import epoch_rows

    e1, e2 = np.sort(epoch_rows(train, hc, 1)), np.sort(epoch_rows(train, hc, 2))
    assert not np.array_equal(e1, e2)
    fixed = hc.model_copy(update={"resample_background": False})
    assert np.array_equal(
        np.sort(epoch_rows(train, fixed, 1)), np.sort(epoch_rows(train, fixed, 2))
    )


def test_load_windows_names_the_set_when_images_are_missing(heads_setup, tmp_path) -> None:
    tmp, voc, set_id = heads_setup
    fs = FeatureStore(tmp / "store").open(set_id)
    with pytest.raises(InputError, match=set_id):
        load_windows(fs, ["999999"], "fc7", what="head.train_split=train")


def test_train_images_keeps_the_first_n_train_images_and_leaves_val_whole(heads_setup) -> None:
    from mlt.heads.run import prepare_inputs

    tmp, voc, set_id = heads_setup
    base = [f"extract.store={tmp / 'store'}"]
    full = prepare_inputs(load_config(None, base), set_id)
    few = prepare_inputs(load_config(None, [*base, "head.train_images=2"]), set_id)
    train_ids = split_image_ids(voc, "train")
    assert list(few.train.image_ids) == train_ids[:2] and len(train_ids) > 2
    assert 0 < len(few.train.labels) < len(full.train.labels)
    assert few.val.image_ids == full.val.image_ids
    with pytest.raises(InputError, match=rf"head.train_images.*{len(train_ids) + 1}"):
        prepare_inputs(
            load_config(None, [*base, f"head.train_images={len(train_ids) + 1}"]), set_id
        )


def test_unset_head_fields_leave_stage_digests_as_they_were() -> None:
    from mlt.experiments.runner import head_digest

    config = load_config(None, [])
    assert "train_images" not in config.head.digest_fields()
    assert config.head.digest_fields() == {
        k: v for k, v in config.head.model_dump(mode="json").items() if k != "train_images"
    }
    few = load_config(None, ["head.train_images=3"])
    assert few.head.digest_fields()["train_images"] == 3
    assert head_digest(few, "t") != head_digest(config, "t")


def test_head_file_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    head = Head(12, 3, 7, 0.3)
    path = save_head(
        tmp_path / "h" / "head.pt", head, {"classes": ["a", "b", "c"], "feature_set": "ab"}
    )
    loaded = load_head(path)
    x = np.random.default_rng(0).standard_normal((5, 12)).astype(np.float16)
    assert torch.equal(window_probs(head, x), window_probs(loaded.model, x))
    assert loaded.classes == ["a", "b", "c"] and loaded.feature_set == "ab"


def test_train_head_then_evaluate_through_the_cli(heads_setup, capsys) -> None:
    tmp, voc, set_id = heads_setup
    common = [f"run_dir={tmp / 'runs'}", f"extract.store={tmp / 'store'}"]
    rc = main(["train-head", "--features", set_id[:6], "--no-progress", *common,
               "head.fca_width=16", "head.epochs=4", "head.lr=0.05", "head.batch_size=64"])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{") :])
    assert "mAP" in out and summary["feature_set"] == set_id
    run_id = summary["run_id"]

    maps = tmp / "maps"
    rc = main(["evaluate", "--head", run_id, "--maps", str(maps), "--n-maps", "2", *common])
    assert rc == 0
    out = capsys.readouterr().out
    ev = json.loads(out[out.index("{\n") :])
    assert "VOC2007 11-point AP" in out and "pointing accuracy" in out
    assert ev["mAP"] > 0.8 and len(ev["overlays"]) == 2

    config = load_config(None, common)
    from mlt import tracking

    tracking.setup_tracking(config)
    run = mlflow.get_run(run_id)
    assert run.data.tags["mlt.featureset.id"] == set_id
    assert run.data.params["head.fca_width"] == "16"
    m = run.data.metrics
    assert {
        "val_mAP",
        "test_mAP",
        "test_mAP_area",
        "test_mAP_k1",
        "test_mAP_kmax",
        "test_pointing_mean",
    } <= set(m)
    assert m["test_mAP"] == pytest.approx(ev["mAP"])
    # both AP forms are kept apart: the area form never overwrites the VOC07 figures
    assert m["val_mAP"] == pytest.approx(summary["val_mAP"])
    assert m["val_mAP_area"] == pytest.approx(summary["val_mAP_area"])
    assert all(f"test_ap_{c}" in m for c in CLASSES)
    saved = load_head(run_id)
    assert saved.feature_set == set_id and saved.classes == CLASSES


def test_unknown_feature_set_is_a_clear_error(heads_setup, capsys) -> None:
    tmp, _, _ = heads_setup
    rc = main(
        [
            "train-head",
            "--features",
            "abcdef99",
            f"extract.store={tmp / 'store'}",
            f"run_dir={tmp / 'runs'}",
        ]
    )
    assert rc == 2
    assert "abcdef99" in capsys.readouterr().err
