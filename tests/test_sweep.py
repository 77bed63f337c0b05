"""Sweeps: the search-space file, the batched path and the Ray Tune path, recorded in MLflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from featurestore_fixture import make_inputs
from vocfixture import Img, Obj, write_voc

from featurestore import FeatureStore
from mlt.config import HeadConfig, WindowsConfig, load_config
from mlt.data.voc import VocDataset
from mlt.errors import InputError
from mlt.extract import image_windows
from mlt.sweep import head_configs, load_space

DIM = 12
SPACE = "lr: [0.05, 0.01]\nweight_decay: [0.0, 1.0e-3]\n"


# -- the search-space file ------------------------------------------------------------------


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_the_shipped_space_is_a_grid_of_16() -> None:
    space = load_space(Path(__file__).resolve().parents[1] / "configs/sweeps/heads.yaml")
    trials = space.grid()
    assert space.grid_size == len(trials) == 16
    assert len({tuple(sorted(t.items())) for t in trials}) == 16
    assert len(head_configs(HeadConfig(), trials)) == 16


def test_grid_choice_and_fixed_values(tmp_path: Path) -> None:
    path = _space(tmp_path, "fca_width: [8, 16]\nlr: {choice: [0.1, 0.01, 0.001]}\nepochs: 4\n")
    space = load_space(path, "grid")
    grid = space.grid()
    assert len(grid) == 6 and grid[0] == {"epochs": 4, "fca_width": 8, "lr": 0.1}
    configs = head_configs(HeadConfig(dropout=0.0), grid)
    assert {(c.fca_width, c.lr, c.epochs, c.dropout) for c in configs} == {
        (w, lr, 4, 0.0) for w in (8, 16) for lr in (0.1, 0.01, 0.001)
    }


def test_random_draws_are_seeded_and_in_range(tmp_path: Path) -> None:
    path = _space(
        tmp_path,
        "fca_width: [8, 16]\ndropout: {uniform: [0.1, 0.4]}\nlr: {loguniform: [1.0e-4, 1.0e-1]}\n",
    )
    space = load_space(path, "random")
    draws = space.trials("random", 20, seed=3)
    assert draws == space.trials("random", 20, seed=3) != space.trials("random", 20, seed=4)
    assert all(0.1 <= d["dropout"] <= 0.4 and 1e-4 <= d["lr"] <= 0.1 for d in draws)
    assert {d["fca_width"] for d in draws} == {8, 16}


@pytest.mark.parametrize(
    ("text", "search", "key", "expected"),
    [
        ("learning_rate: [0.1]\n", "grid", "learning_rate", "a head field"),
        ("lr: [0.1, -1]\n", "grid", "lr", "greater than 0"),
        ("lr: []\n", "grid", "lr", "at least one value"),
        ("lr: {uniform: [0.1, 0.2]}\n", "grid", "lr", "sweep.search=random"),
        ("lr: {normal: [0.1, 0.2]}\n", "random", "lr", "choice, uniform, loguniform"),
        ("lr: {loguniform: [0, 0.1]}\n", "random", "lr.loguniform", "a > 0"),
        ("lr: {uniform: [0.3, 0.1]}\n", "random", "lr.uniform", "a < b"),
        ("lr: {uniform: [0.1]}\n", "random", "lr.uniform", "two numbers"),
        ("fca_width: {uniform: [8, 64]}\n", "random", "fca_width", "not a float field"),
        ("optimizer: [sgd, rmsprop]\n", "grid", "optimizer", "'sgd' or 'adamw'"),
        ("dropout: 1.5\n", "grid", "dropout", "less than 1"),
    ],
)
def test_bad_spaces_name_file_key_and_value(tmp_path, text, search, key, expected) -> None:
    path = _space(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_space(path, search)
    message = str(err.value)
    assert str(path) in message and f"field '{key}'" in message and expected in message


def test_empty_or_unreadable_spaces(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="at least one head field"):
        load_space(_space(tmp_path, ""))
    with pytest.raises(InputError, match="a mapping"):
        load_space(_space(tmp_path, "- lr\n"))
    with pytest.raises(InputError, match="readable"):
        load_space(tmp_path / "missing.yaml")


def test_sweeps_refuse_unfrozen_heads(tmp_path: Path) -> None:
    if "unfreeze" not in HeadConfig.model_fields:
        pytest.skip("no head.unfreeze in this config schema")
    from mlt.sweep import run_sweep

    path = _space(tmp_path, "unfreeze: [fc6]\n")
    with pytest.raises(InputError, match="unfreeze"):
        run_sweep(_config(tmp_path, path), "0000")


# -- end to end on a tiny feature set -------------------------------------------------------


def _tiny_set(tmp: Path) -> tuple[Path, str]:
    """Returns (VOC root, feature-set id): 10 train, 6 val images, features carrying the label."""
    rng = np.random.default_rng(0)
    classes = ["cat", "dog"]

    def img(i: int) -> Img:
        name = classes[i % 2]
        x, y = int(rng.integers(1, 20)), int(rng.integers(1, 12))
        objects = [Obj(name, x, y, x + 36, y + 30)]
        if i % 3 == 0:
            objects.append(Obj(classes[1 - i % 2], 2, 2, 26, 22))
        return Img(f"{i:06d}", objects=objects)

    splits = {"train": [img(i) for i in range(10)], "val": [img(i) for i in range(10, 16)],
              "test": [img(i) for i in range(16, 18)]}  # fmt: skip
    root = write_voc(tmp / "voc", classes, splits)
    ds = VocDataset(root)
    wc = WindowsConfig(scales=[1.0, 1.5, 2.0, 3.0])
    store = FeatureStore(tmp / "store")
    meta = {"trunk_run": None, "trunk_source": "none", "dataset": str(root), "classes": classes}
    with store.writer(
        make_inputs(layers=["fc7"], dataset_digest="tiny-sweep"), {"fc7": DIM}, meta
    ) as w:
        for split in ("train", "val", "test"):
            for ann in ds.iter_annotations(split):
                boxes, scale, labels = image_windows(ann, ds.classes, wc)
                feats = rng.standard_normal((len(boxes), DIM)).astype(np.float32)
                feats[np.arange(len(boxes)), np.where(labels >= 0, labels, 2)] += 2.0
                cols = {"boxes": boxes, "scale": scale, "label": labels, "split": split}
                w.put(ann.image_id, {"fc7": feats}, cols)
        fs = w.commit(run_id="run-extract")
    return root, fs.id


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    root, set_id = _tiny_set(tmp)
    space = _space(tmp, SPACE)
    return tmp, set_id, space


def _config(tmp: Path, space: Path, *extra: str):
    return load_config(None, [f"run_dir={tmp / 'runs'}", f"extract.store={tmp / 'store'}", f"sweep.space={space}",
                              "head.fca_width=8", "head.dropout=0.0", "head.epochs=3", "head.batch_size=16",
                              "head.background_fraction=0.5", "head.patience=3", *extra])  # fmt: skip


def _children(parent_id: str) -> list:
    import mlflow

    return mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", output_format="list"
    )  # fmt: skip


def _check_recorded(summary: dict, n_trials: int) -> dict:
    """Checks the parent, children and best head in MLflow; returns {(lr, wd): val_mAP history}."""
    import mlflow

    from mlt.heads.artifact import load_head

    client = mlflow.MlflowClient()
    parent = client.get_run(summary["parent_run_id"])
    assert parent.data.tags["mlt.stage"] == "sweep"
    assert parent.data.tags["mlt.featureset.id"] == summary["feature_set"]
    assert parent.data.tags["mlt.sweep.best_run"] == summary["best_run_id"]
    assert parent.data.metrics["trials"] == n_trials
    assert parent.data.metrics["best_val_voc07_mAP"] == pytest.approx(summary["best_val_mAP"])
    assert "best_val_area_mAP" in parent.data.metrics and "best.lr" in parent.data.params
    peak = parent.data.metrics  # load figures: torch + windows; private memory within the peak
    assert 100 * 2**20 < peak["peak_anon_driver_bytes"] <= peak["peak_rss_driver_bytes"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "tables")}
    assert artifacts == {"tables/best_val_voc07.txt", "tables/best_val_area.txt"}

    children = _children(parent.info.run_id)
    assert len(children) == n_trials
    histories = {}
    for child in children:
        assert child.data.tags["mlt.stage"] == "sweep-trial"
        assert child.data.tags["mlt.featureset.id"] == summary["feature_set"]
        assert child.data.params["head.fca_width"] == "8"
        steps = client.get_metric_history(child.info.run_id, "val_mAP")
        assert [m.step for m in sorted(steps, key=lambda m: m.step)] == list(
            range(1, len(steps) + 1)
        )
        key = (float(child.data.params["head.lr"]), float(child.data.params["head.weight_decay"]))
        histories[key] = [m.value for m in sorted(steps, key=lambda m: m.step)]
        assert child.data.metrics["best_val_mAP"] == pytest.approx(max(histories[key]))
    best = client.get_run(summary["best_run_id"])
    assert best.data.metrics["best_val_mAP"] == max(
        c.data.metrics["best_val_mAP"] for c in children
    )
    assert best.data.metrics["best_val_mAP"] == pytest.approx(summary["best_val_mAP"])
    saved = load_head(summary["best_run_id"])
    assert saved.classes == ["cat", "dog"] and saved.feature_set == summary["feature_set"]
    assert saved.meta["head"]["lr"] == summary["best_config"]["lr"]
    assert saved.model.fca_width == 8
    return histories


def test_batched_sweep_records_parent_children_and_best_head(tiny) -> None:
    from mlt.sweep import run_sweep

    tmp, set_id, space = tiny
    summary = run_sweep(_config(tmp, space), set_id[:8], batched=True, progress=False)
    assert summary["path"] == "batched" and summary["trials"] == 4
    assert set(summary["best_config"]) == {"lr", "weight_decay"}
    assert summary["heads_per_minute"] > 0 and "mAP" in summary["table"]
    _check_recorded(summary, 4)


@pytest.mark.slow
def test_tune_sweep_trains_the_same_heads_as_the_batched_path(ray_session, tiny) -> None:
    from mlt.sweep import run_sweep

    tmp, set_id, space = tiny
    batched = run_sweep(_config(tmp, space), set_id, batched=True, progress=False)
    tuned = run_sweep(
        _config(tmp, space, "sweep.scheduler=asha"), set_id, batched=False, progress=False
    )
    assert tuned["path"] == "tune" and tuned["trials"] == 4
    reference = _check_recorded(batched, 4)
    histories = _check_recorded(tuned, 4)
    for key, history in histories.items():
        # Tune trials train one head each with train_head; ASHA may cut some short.
        assert history == pytest.approx(reference[key][: len(history)], abs=1e-9)
    best = max(max(h) for h in histories.values())
    assert tuned["best_val_mAP"] == pytest.approx(best, abs=1e-9)
    assert tuned["best_val_mAP"] <= batched["best_val_mAP"] + 1e-9


# -- an interrupted sweep resumes -------------------------------------------------------------

RESUME_SPACE = "fca_width: [4, 8]\nlr: [0.05, 0.01]\n"  # 4 trials, 2 batched groups (by width)


def _trial_runs(parent_id: str) -> dict[int, str]:
    """Returns {trial index: child run id} of a sweep's (undeleted) child runs."""
    return {int(c.data.tags["mlt.trial.index"]): c.info.run_id for c in _children(parent_id)}


def _best_vals(parent_id: str) -> dict[int, float]:
    return {
        int(c.data.tags["mlt.trial.index"]): c.data.metrics["best_val_mAP"]
        for c in _children(parent_id)
    }


def _same_result(resumed: dict, clean: dict) -> None:
    for key in ("best_config", "best_head", "best_epoch", "best_val_mAP", "best_val_mAP_voc07",
                "best_val_mAP_area", "table", "trials", "outcomes"):  # fmt: skip
        assert resumed[key] == clean[key], key


def test_an_interrupted_batched_sweep_resumes_without_retraining(tiny, monkeypatch, capsys) -> None:
    import mlflow

    import mlt.heads.batched as batched
    from mlt.heads.artifact import load_head
    from mlt.sweep import FAULT_ENV, INPUTS_TAG, _unfinished_sweep, run_sweep

    tmp, set_id, _ = tiny
    (tmp / "resume").mkdir()
    space = _space(tmp / "resume", RESUME_SPACE)
    config = _config(tmp, space)
    clean = run_sweep(config, set_id, batched=True, progress=False)
    clean_vals = _best_vals(clean["parent_run_id"])
    clean_head = load_head(clean["best_run_id"]).model.state_dict()

    trained: list[tuple[int, float]] = []
    train_heads = batched.train_heads_batched

    def counting(train, val, configs, *args, **kwargs):
        trained.extend((hc.fca_width, hc.lr) for hc in configs)
        return train_heads(train, val, configs, *args, **kwargs)

    monkeypatch.setattr(batched, "train_heads_batched", counting)
    monkeypatch.setenv(FAULT_ENV, "2")  # stop once the first group (2 trials) is recorded
    with pytest.raises(RuntimeError, match=FAULT_ENV):
        run_sweep(config, set_id, batched=True, progress=False)
    digest = mlflow.get_run(clean["parent_run_id"]).data.tags[INPUTS_TAG]
    [parent] = [
        run for run in mlflow.search_runs(search_all_experiments=True, output_format="list",
                                          filter_string=f"tags.`{INPUTS_TAG}` = '{digest}'")
        if run.info.run_id != clean["parent_run_id"]
    ]  # fmt: skip
    assert parent.info.status == "FAILED" and trained == [(4, 0.05), (4, 0.01)]
    before = _trial_runs(parent.info.run_id)
    assert sorted(before) == [0, 1]

    monkeypatch.delenv(FAULT_ENV)
    trained.clear()
    capsys.readouterr()
    resumed = run_sweep(config, set_id, batched=True, progress=False)
    assert "2 of 4 trials finished before and are reused, 2 to train" in capsys.readouterr().out
    assert resumed["parent_run_id"] == parent.info.run_id and resumed["reused_trials"] == 2
    assert trained == [(8, 0.05), (8, 0.01)]  # only the second group
    after = _trial_runs(parent.info.run_id)
    assert sorted(after) == list(range(4)) and {i: after[i] for i in before} == before
    assert mlflow.get_run(parent.info.run_id).info.status == "FINISHED"
    assert mlflow.get_run(parent.info.run_id).data.metrics["reused_trials"] == 2

    _same_result(resumed, clean)
    assert _best_vals(parent.info.run_id) == clean_vals
    best = load_head(resumed["best_run_id"]).model.state_dict()
    assert all(torch.equal(best[k], clean_head[k]) for k in clean_head)
    # finished now: running the same sweep again would start a new one
    assert _unfinished_sweep(parent.info.experiment_id, digest) is None


@pytest.mark.slow
def test_an_interrupted_tune_sweep_resumes_without_retraining(ray_session, tiny, capsys, monkeypatch) -> None:  # fmt: skip
    import mlflow

    from mlt.sweep import FAULT_ENV, run_sweep

    tmp, set_id, _ = tiny
    (tmp / "resume-tune").mkdir()
    space = _space(tmp / "resume-tune", "lr: [0.05, 0.01]\n")
    config = _config(tmp, space, "sweep.scheduler=fifo")
    # The reference: with dropout 0 a Tune trial trains the same head as the batched path.
    clean = run_sweep(config, set_id, batched=True, progress=False)
    monkeypatch.setenv(FAULT_ENV, "1")  # stop once the first trial is recorded
    with pytest.raises(RuntimeError, match=FAULT_ENV):
        run_sweep(config, set_id, batched=False, progress=False)
    [parent] = mlflow.search_runs(
        search_all_experiments=True, output_format="list",
        filter_string="tags.`mlt.stage` = 'sweep' and tags.`mlt.sweep.path` = 'tune' and attributes.status = 'FAILED'",
    )  # fmt: skip
    before = _trial_runs(parent.info.run_id)
    assert len(before) == 1

    monkeypatch.delenv(FAULT_ENV)
    capsys.readouterr()
    resumed = run_sweep(config, set_id, batched=False, progress=False)
    assert "1 of 2 trials finished before and are reused, 1 to train" in capsys.readouterr().out
    assert resumed["parent_run_id"] == parent.info.run_id and resumed["reused_trials"] == 1
    after = _trial_runs(parent.info.run_id)
    assert sorted(after) == [0, 1] and {i: after[i] for i in before} == before
    assert resumed["best_config"] == clean["best_config"]
    assert resumed["best_val_mAP"] == pytest.approx(clean["best_val_mAP"], abs=1e-9)
