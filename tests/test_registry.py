"""The model registry end to end against a real ``mlflow server`` on 127.0.0.1 (SQLite backend,
artifacts in a temporary folder): a trunk run, a real extraction, two heads, register → promote
(accepted) → promote a better one (champion moves) → promote the worse again (refused, champion
unchanged) → predict through ``models:/NAME@champion``, equal to the in-memory model."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from headfixture import CLASSES, make_voc
from PIL import Image

from mlt.cli import main
from mlt.config import load_config
from mlt.data.voc import VocDataset
from mlt.errors import InputError
from mlt.heads.model import Head
from mlt.models import create_model
from mlt.registry.model import CompleteModel, load_complete, save_complete
from mlt.registry.promote import gate
from mlt.registry.server import host_warning

TINYVOC_IMAGES = Path(__file__).resolve().parents[2] / "shared/data/tinyvoc/TinyVOC/JPEGImages"
COLOURS = {"car": (220, 40, 40), "cat": (40, 200, 40), "dog": (40, 60, 220)}
NAME = "tiny-complete"


# -- fast: no server ------------------------------------------------------------------------


def _small_model(seed: int = 0) -> CompleteModel:
    torch.manual_seed(seed)
    trunk = create_model("alexnet-small", num_classes=5)
    return CompleteModel(trunk, Head(1024, 2, 8), ["cat", "dog"], 5.0, "fc7", [1.0, 2.0])


def test_complete_model_round_trip_on_images_of_any_size(tmp_path) -> None:
    model = _small_model()
    loaded = load_complete(save_complete(tmp_path / "complete.pt", model))
    assert loaded.settings() == model.settings()
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 3), (9, 140, 3), (75, 60, 3)]:
        pixels = rng.integers(0, 255, shape, dtype=np.uint8)
        a, b = model.predict(pixels), loaded.predict(pixels)
        np.testing.assert_array_equal(a["score_array"], b["score_array"])
        assert (a["width"], a["height"]) == (shape[1], shape[0]) and a["windows"] == len(a["boxes"])
        assert a["probs"].shape == (a["windows"], 2)
        assert all(0.0 <= s <= 1.0 for s in a["scores"].values())
        assert [c for c, _ in a["top"]] == sorted(a["scores"], key=lambda c: -a["scores"][c])
    with pytest.raises(InputError, match="missing image"):
        model.predict(str(tmp_path / "absent.jpg"))


def test_gate_moves_only_on_a_strict_improvement_of_at_least_min_delta() -> None:
    assert gate(0.5, None)[0]
    assert gate(0.61, 0.60)[0] and not gate(0.60, 0.60)[0] and not gate(0.59, 0.60)[0]
    assert gate(0.62, 0.60, 0.02)[0] and not gate(0.615, 0.60, 0.02)[0]
    assert not gate(float("nan"), 0.1)[0]
    with pytest.raises(InputError, match="min-delta"):
        gate(0.5, 0.4, -0.1)


def test_servers_warn_when_bound_wider_than_the_loopback() -> None:
    assert host_warning("127.0.0.1") is None and host_warning("localhost") is None
    assert "0.0.0.0" in host_warning("0.0.0.0")


def test_predict_refuses_models_from_outside_the_registry(tmp_path, capsys) -> None:
    path = save_complete(tmp_path / "complete.pt", _small_model())
    img = tmp_path / "a.jpg"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(img)
    rc = main(["predict", "--model", str(path), str(img), f"run_dir={tmp_path / 'runs'}"])
    assert rc == 2 and "models:/" in capsys.readouterr().err


# -- slow: a real server, extraction, heads ---------------------------------------------------


def _paint(voc: Path) -> None:
    """Repaints every image: grey noise, the object box in its class colour (learnable)."""
    ds = VocDataset(voc)
    rng = np.random.default_rng(1)
    for split in ("trainval", "test"):
        for ann in ds.iter_annotations(split):
            px = rng.integers(90, 140, (ann.height, ann.width, 3)).astype(np.int16)
            for box, ci in zip(ann.boxes(), ann.class_indices(CLASSES), strict=True):
                x0, y0, x1, y1 = (int(round(v)) for v in box)
                px[y0:y1, x0:x1] = np.array(COLOURS[CLASSES[ci]]) + rng.integers(-20, 20, (y1 - y0, x1 - x0, 3))  # fmt: skip
            path = ds.image_path(ann.image_id, ann.filename)
            Image.fromarray(px.clip(0, 255).astype(np.uint8)).save(path, quality=95)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from mlt.registry.server import start_server

    tmp = tmp_path_factory.mktemp("mlflow-server")
    srv = start_server(f"sqlite:///{tmp / 'mlflow.db'}", tmp / "artifacts", timeout=300)
    assert srv.host == "127.0.0.1" and srv.warning is None
    yield srv
    srv.stop()
    assert not srv.running()


@pytest.fixture(scope="module")
def world(server, ray_session, tmp_path_factory):
    """Returns (tmp, common overrides, config, good head run, worse head run, trunk run)."""
    import mlflow.pytorch

    from mlt import tracking
    from mlt.extract import run_extract
    from mlt.heads.evaluation import run_evaluate
    from mlt.heads.run import run_train_head

    tmp = tmp_path_factory.mktemp("registry")
    voc = make_voc(tmp / "voc", n_train=9, n_val=6, n_test=6)
    _paint(voc)
    common = [
        f"run_dir={tmp / 'runs'}", f"extract.store={tmp / 'store'}", f"data.target={voc}",
        "data.train_split=trainval", "extract.workers=1", "extract.backend=reference",
        "windows.scales=[1.0, 2.0]", f"tracking.uri={server.url}", "head.fca_width=32",
        "head.batch_size=64",
    ]  # fmt: skip
    config = load_config(None, common)
    torch.manual_seed(0)
    trunk = create_model("alexnet-small", num_classes=5)
    with tracking.run(config, "trunk", "pretrain") as active:
        mlflow.pytorch.log_model(trunk, name="trunk", serialization_format="pickle")
    trunk_run = active.info.run_id
    fs_id = run_extract(config, trunk_run, progress=False)["feature_set"]
    good = load_config(None, [*common, "head.epochs=8", "head.lr=0.05", "head.patience=8"])
    worse = load_config(None, [*common, "head.epochs=1", "head.lr=1e-9", "head.seed=3"])
    runs = {}
    for key, cfg in (("good", good), ("worse", worse)):
        run_id = run_train_head(cfg, fs_id, progress=False)["run_id"]
        runs[key] = (run_id, run_evaluate(cfg, run_id, "test")["mAP"])
    assert runs["good"][1] > runs["worse"][1], runs  # the fixture's premise
    return tmp, common, config, runs["good"][0], runs["worse"][0], trunk_run


def _images(tmp: Path) -> list[str]:
    names = ["000001.jpg", "000002.jpg"]
    if all((TINYVOC_IMAGES / n).is_file() for n in names):
        return [str(TINYVOC_IMAGES / n) for n in names]
    ds = VocDataset(tmp / "voc")
    return [str(ds.image_path(i)) for i in ds.ids("test")[:2]]


@pytest.mark.slow
def test_register_promote_refuse_then_predict_through_the_champion(world, capsys) -> None:
    import mlflow.pyfunc
    import pandas as pd
    from mlflow import MlflowClient

    from mlt.registry.predict import load_registered
    from mlt.registry.promote import promote
    from mlt.registry.pyfunc import assemble

    tmp, common, config, good, worse, trunk_run = world
    client = MlflowClient(config.tracking.uri)

    first = promote(config, worse, NAME)  # no champion yet: accepted
    assert first.accepted and first.champion_version is None and first.version == "1"
    rc = main(["promote", "--run", good, "--name", NAME, "--json", *common])
    assert rc == 0
    second = json.loads(capsys.readouterr().out)
    assert second["accepted"] and second["champion_version"] == "1"
    assert second["champion_value"] == pytest.approx(first.value)
    assert second["value"] > second["champion_value"]

    rc = main(["promote", "--run", worse, "--name", NAME, *common])  # worse: refused
    out = capsys.readouterr().out
    assert rc == 1 and "REFUSED" in out and f"{first.value:.4f}" in out
    assert f"{second['value']:.4f}" in out
    assert client.get_model_version_by_alias(NAME, "champion").version == "2"
    assert client.get_model_version_by_alias(NAME, "challenger").version == "3"

    v1, v2, v3 = (client.get_model_version(NAME, str(v)) for v in (1, 2, 3))
    assert v1.tags["mlt.promotion.replaced_by"] == "2" and "replaced as @champion" in v1.description
    assert v2.tags["mlt.promotion.decision"] == "champion" and "ACCEPTED" in v2.description
    assert v3.tags["mlt.promotion.decision"] == "refused" and "REFUSED" in v3.description
    assert v2.run_id == good
    lineage = {k: v for k, v in v2.tags.items() if not k.startswith("mlt.promotion.")}
    assert lineage["mlt.trunk.run"] == trunk_run and lineage["mlt.head.run"] == good
    head_tags = client.get_run(good).data.tags
    for tag in ("mlt.featureset.id", "mlt.dataset.digest", "mlt.trunk.digest"):
        assert lineage[tag] == head_tags[tag]
    assert lineage["mlt.git.commit"]  # a hash, or "unknown" outside a checkout

    # predict: the registered champion equals the in-memory model, through both loaders
    images = _images(tmp)
    expected = [assemble(config, good).model.predict(p) for p in images]
    maps = tmp / "maps"
    rc = main(["predict", "--model", f"models:/{NAME}@champion", *images, "--maps", str(maps), "--top", "2", *common])  # fmt: skip
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [d["image"] for d in lines] == images
    for got, exp in zip(lines, expected, strict=True):
        np.testing.assert_allclose(
            [got["scores"][c] for c in CLASSES], exp["score_array"], rtol=1e-6
        )
        assert [t["class"] for t in got["top"]] == [c for c, _ in exp["top"][:2]]
        assert len(got["maps"]) == 2 and all(Path(m).is_file() for m in got["maps"])
    by_run = load_registered(config, f"runs:/{good}/complete_model")  # the same model, by run
    np.testing.assert_allclose(by_run.predict(images[0])["score_array"], expected[0]["score_array"], rtol=1e-6)  # fmt: skip
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    frame = pd.DataFrame({"image": [images[0], base64.b64encode(Path(images[1]).read_bytes()).decode()]})  # fmt: skip
    scores = pyfunc.predict(frame)
    assert list(scores.columns) == CLASSES
    np.testing.assert_allclose(scores.to_numpy(), np.stack([e["score_array"] for e in expected]), rtol=1e-6)  # fmt: skip


@pytest.mark.slow
def test_refusals_name_what_is_wrong_and_register_nothing(world, capsys, monkeypatch) -> None:
    from mlflow import MlflowClient

    from featurestore import FeatureSet
    from mlt.registry.promote import PromotionRefused, promote

    tmp, common, config, good, _, _ = world
    client = MlflowClient(config.tracking.uri)
    name = "refusals"
    digest = client.get_run(good).data.tags["mlt.dataset.digest"]
    client.delete_tag(good, "mlt.dataset.digest")
    try:
        with pytest.raises(PromotionRefused, match="missing tag mlt.dataset.digest"):
            promote(config, good, name)
    finally:
        client.set_tag(good, "mlt.dataset.digest", digest)
    with pytest.raises(PromotionRefused, match="no metric 'test_nope'"):
        promote(config, good, name, metric="test_nope")
    monkeypatch.setattr(FeatureSet, "verify", lambda self: [f"feature set {self.id}: checksum mismatch"])  # fmt: skip
    rc = main(["promote", "--run", good, "--name", name, *common])
    assert rc == 2 and "fails verification" in capsys.readouterr().err
    monkeypatch.undo()
    assert client.search_registered_models(f"name = '{name}'") == []

    rc = main(["promote", "--run", "0123456789abcdef", "--name", name, *common])
    assert rc == 2 and "0123456789abcdef" in capsys.readouterr().err
    image = _images(tmp)[0]
    rc = main(["predict", "--model", "models:/no-such-model@champion", image, *common])
    assert rc == 2 and "no-such-model" in capsys.readouterr().err
    missing = str(tmp / "nowhere" / "absent.jpg")
    rc = main(["predict", "--model", f"models:/{NAME}@champion", image, missing, *common])
    assert rc == 2 and missing in capsys.readouterr().err
