"""Window feature extraction into the store: Ray actors, idempotence, resume, conv mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from trunkfixture import tiny_trunk
from vocfixture import small_voc

from featurestore import FeatureStore
from mlt.config import load_config
from mlt.data.voc import VocDataset
from mlt.extract import Featurizer, dataset_items, feature_inputs, load_trunk, run_extract

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("extract")
    root = small_voc(tmp / "voc")
    ckpt = tiny_trunk(tmp / "trunk.pt")
    return tmp, root, ckpt


def _config(tmp: Path, root: Path, *extra: str):
    return load_config(None, [f"run_dir={tmp / 'runs'}", f"extract.store={tmp / 'store'}", f"data.target={root}",
                              "data.train_split=trainval", "extract.workers=2", "extract.backend=reference", *extra])  # fmt: skip


def test_extract_then_skip_then_verify(ray_session, setup) -> None:
    tmp, root, ckpt = setup
    config = _config(tmp, root)
    first = run_extract(config, str(ckpt), progress=False)
    assert not first["skipped"] and first["images"] == 7 and first["resumed_images"] == 0
    ds = VocDataset(root)
    items, _ = dataset_items(ds, ["trainval", "test"], config.windows)
    assert first["windows"] == sum(len(it.boxes) for it in items)

    fs = FeatureStore(tmp / "store").open(first["feature_set"])
    assert fs.verify() == []
    trunk = load_trunk(str(ckpt))
    featurizer = Featurizer(trunk.model, ["fc7"], "crop", "reference")
    it = items[0]
    expected = featurizer(it.path, it.boxes, it.scale)["fc7"]
    np.testing.assert_array_equal(fs.get(it.image_id, "fc7"), expected)
    labels = fs.labels(fs.select(image_ids=[it.image_id]))
    np.testing.assert_array_equal(labels, it.label)

    import mlflow

    metrics = mlflow.get_run(first["run_id"]).data.metrics  # the load figures: peak memory
    assert metrics["peak_rss_actor_max_bytes"] > 50 * 2**20  # an actor holds torch + the trunk
    assert metrics["peak_rss_total_bytes"] >= metrics["peak_rss_driver_bytes"] + 2 * 50 * 2**20
    # private memory, sampled: within the resident peak, and an actor's holds torch + the trunk
    assert 50 * 2**20 < metrics["peak_anon_actor_max_bytes"] <= metrics["peak_rss_actor_max_bytes"]
    assert 0 < metrics["peak_anon_driver_bytes"] <= metrics["peak_rss_driver_bytes"]

    again = run_extract(config, str(ckpt), progress=False)
    assert again["skipped"] and again["feature_set"] == first["feature_set"]


def test_interrupted_extraction_resumes_to_the_same_set(ray_session, setup) -> None:
    tmp, root, ckpt = setup
    config = _config(tmp, root, f"extract.store={tmp / 'store2'}")
    ds = VocDataset(root)
    items, digest = dataset_items(ds, ["trainval", "test"], config.windows)
    trunk = load_trunk(str(ckpt))
    inputs = feature_inputs(trunk, ["fc7"], config.windows, "crop", "reference", digest)
    store = FeatureStore(tmp / "store2")
    writer = store.writer(inputs, {"fc7": trunk.model.feature_dims["fc7"]})
    featurizer = Featurizer(trunk.model, ["fc7"], "crop", "reference")
    for it in items[:3]:
        writer.put(it.image_id, featurizer(it.path, it.boxes, it.scale), it.manifest_columns())
    writer.abort()  # as if the job died here
    out = run_extract(config, str(ckpt), progress=False)
    assert out["resumed_images"] == 3 and out["images"] == 7
    clean = FeatureStore(tmp / "store").open(out["feature_set"])  # the first test's clean run
    resumed = store.open(out["feature_set"])
    for it in items:
        np.testing.assert_array_equal(
            resumed.get(it.image_id, "fc7"), clean.get(it.image_id, "fc7")
        )
    assert resumed.manifest.equals(clean.manifest)


def test_conv_mode_is_its_own_set_and_agrees_on_whole_image_windows(ray_session, setup) -> None:
    tmp, root, ckpt = setup
    trunk = load_trunk(str(ckpt))
    crop = Featurizer(trunk.model, ["fc7"], "crop", "reference")
    conv = Featurizer(trunk.model, ["fc7"], "conv", "reference")
    ds = VocDataset(root)
    ann = ds.annotation("000003")  # 40x40: the λ=1 window is the whole image
    box = np.array([[0, 0, 40, 40]], dtype=np.float32)
    path = str(ds.image_path("000003"))
    a = crop(path, box, np.ones(1, np.float32))["fc7"].astype(np.float32)
    b = conv(path, box, np.ones(1, np.float32))["fc7"].astype(np.float32)
    assert ann.width == 40
    np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-2)
    out = run_extract(_config(tmp, root, "extract.mode=conv"), str(ckpt), progress=False)
    assert not out["skipped"] and out["images"] == 7
    assert (
        out["feature_set"]
        != run_extract(_config(tmp, root), str(ckpt), progress=False)["feature_set"]
    )


def test_sigkilled_actor_then_rerun_equals_a_clean_run(ray_session, setup, monkeypatch) -> None:
    import ray

    from mlt.extract import FAULT_ENV

    tmp, root, ckpt = setup
    marker = tmp / "killed-actor"
    config = _config(tmp, root, f"extract.store={tmp / 'store3'}", "extract.chunk_images=1")
    monkeypatch.setenv(FAULT_ENV, f"2:{marker}")  # an actor dies on its second chunk
    with pytest.raises(ray.exceptions.RayActorError):
        run_extract(config, str(ckpt), progress=False)
    assert marker.exists()
    store = FeatureStore(tmp / "store3")
    assert store.list(include_partial=False) == []  # nothing half-written was published
    monkeypatch.delenv(FAULT_ENV)
    out = run_extract(config, str(ckpt), progress=False)
    # how much was written before the death is a race between the two actors: at most 6 of 7
    assert out["images"] == 7 and out["resumed_images"] < 7
    clean = FeatureStore(tmp / "store").open(out["feature_set"])
    resumed = store.open(out["feature_set"])
    assert resumed.verify() == [] and resumed.image_ids() == clean.image_ids()
    for image_id in clean.image_ids():
        np.testing.assert_array_equal(resumed.get(image_id, "fc7"), clean.get(image_id, "fc7"))
    assert resumed.manifest.equals(clean.manifest)


def test_trunk_given_as_an_mlflow_run_id_is_found_in_the_configs_store(
    ray_session, setup, monkeypatch
) -> None:
    import mlflow

    from mlt import tracking

    tmp, root, ckpt = setup
    config = _config(
        tmp, root, f"run_dir={tmp / 'runs-by-id'}", f"extract.store={tmp / 'store-by-id'}"
    )
    trunk = load_trunk(str(ckpt))
    tracking.setup_tracking(config)
    with mlflow.start_run() as run:
        mlflow.pytorch.log_model(trunk.model, name="trunk", serialization_format="pickle")
    # mlflow points elsewhere and the user chose nothing (monkeypatch restores the variable:
    # mlflow.set_tracking_uri exports it, which would leak into later tests)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "placeholder")
    mlflow.set_tracking_uri("sqlite:///" + str(tmp / "elsewhere.db"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = run_extract(config, run.info.run_id, progress=False)
    fs = FeatureStore(tmp / "store-by-id").open(out["feature_set"])
    assert fs.meta["info"]["trunk_run"] == run.info.run_id
    assert fs.meta["inputs"]["trunk_digest"] == trunk.digest
