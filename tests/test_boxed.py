"""The boxed protocol: one square window per box, mirror padding, boxed extraction, actions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from trunkfixture import tiny_trunk
from vocfixture import Img, Obj, small_voc, write_voc

from featurestore import FeatureStore
from mlt.config import WindowsConfig, load_config
from mlt.data.voc import VocDataset
from mlt.decode import make_window_cropper
from mlt.errors import InputError
from mlt.extract import Featurizer, dataset_items, feature_inputs, load_trunk, run_extract
from mlt.models import create_model
from mlt.windows_boxed import (
    action_windows,
    boxed_windows,
    mirror_crops,
    mirror_pad,
    square_windows,
    window_scales,
)


def test_square_windows_are_centred_squares_of_the_longer_side() -> None:
    boxes = np.array([[10, 20, 30, 60], [0, 0, 50, 10], [5, 5, 6, 6]], dtype=np.float32)
    sq = square_windows(boxes)
    np.testing.assert_allclose((sq[:, :2] + sq[:, 2:]) / 2, (boxes[:, :2] + boxes[:, 2:]) / 2)
    np.testing.assert_allclose(sq[:, 2] - sq[:, 0], sq[:, 3] - sq[:, 1])
    np.testing.assert_allclose(sq[:, 2] - sq[:, 0], [40, 50, 1])
    assert sq[1, 1] == -20  # a wide box near the top: the square leaves the image


def test_boxed_windows_label_each_non_difficult_object(tmp_path) -> None:
    ds = VocDataset(small_voc(tmp_path / "voc"))
    ann = ds.annotation("000002")  # dog (10, 8, 60, 40) and a difficult cat
    boxes, labels = boxed_windows(ann, ds.classes)
    assert labels.tolist() == [ds.classes.index("dog")]
    np.testing.assert_allclose(boxes, [[9, -2, 60, 49]])  # 0-based (9, 7, 60, 40): side 51
    assert boxed_windows(ds.annotation("000007"), ds.classes)[0].shape == (0, 4)
    np.testing.assert_allclose(window_scales(boxes, ann.width, ann.height), [48 / 51])


def test_boxed_grid_items_and_feature_set_inputs(tmp_path) -> None:
    ds = VocDataset(small_voc(tmp_path / "voc"))
    items, _ = dataset_items(ds, ["trainval", "test"], WindowsConfig(grid="boxed"))
    # 000007 has only a difficult object: no window, no item.
    assert [it.image_id for it in items] == [
        "000001",
        "000002",
        "000003",
        "000004",
        "000005",
        "000006",
    ]
    assert [len(it.boxes) for it in items] == [1, 1, 1, 1, 2, 1]
    assert items[4].label.tolist() == [1, 1]

    class _Trunk:
        digest = "d"
        model = create_model("alexnet-small", num_classes=2)

    paper = feature_inputs(_Trunk, ["fc7"], WindowsConfig(), "crop", "reference", "x")
    assert "kind" not in paper["grid"]  # paper-grid ids are unchanged
    boxed = feature_inputs(_Trunk, ["fc7"], WindowsConfig(grid="boxed"), "crop", "reference", "x")
    assert boxed["grid"] == {"kind": "boxed"}


def _image(h: int = 23, w: int = 31) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_mirror_pad_cuts_what_np_pad_symmetric_holds() -> None:
    image = _image()
    rng = np.random.default_rng(1)
    boxes = []
    for _ in range(200):
        side = rng.uniform(1, 60)
        x0, y0 = rng.uniform(-30, 40), rng.uniform(-30, 30)
        boxes.append([x0, y0, x0 + side, y0 + side * rng.uniform(0.5, 1.5)])
    boxes = np.array(boxes, dtype=np.float32)
    padded, moved = mirror_pad(image, boxes)
    big = 200  # any pad larger than every overshoot gives the same pixels
    reference = np.pad(image, ((big, big), (big, big), (0, 0)), mode="symmetric")
    crops, (top, _, left, _) = mirror_crops(boxes, *image.shape[:2])
    for box, (y, x, h, w), m in zip(boxes, crops, moved, strict=True):
        xm, ym = int(m[0]), int(m[1])
        assert (m[2] - m[0], m[3] - m[1]) == (w, h)
        got = padded[ym : ym + h, xm : xm + w]
        inside = (
            box[0] >= 0 and box[1] >= 0 and box[2] <= image.shape[1] and box[3] <= image.shape[0]
        )
        if not inside:  # rounded in image coordinates, not shifted back inside
            assert (x - left, y - top) == (round(float(box[0])), round(float(box[1])))
        y0, x0 = y - top + big, x - left + big
        np.testing.assert_array_equal(got, reference[y0 : y0 + h, x0 : x0 + w])


def test_mirror_pad_leaves_windows_inside_the_image_alone() -> None:
    image = _image()
    boxes = np.array([[0, 0, 23, 23], [8, 0, 31, 23], [2.4, 3.6, 12.5, 13.7]], dtype=np.float32)
    same, moved = mirror_pad(image, boxes)
    assert same is image and np.array_equal(moved, boxes)


def test_cropper_on_the_padded_image_equals_cropping_np_pad() -> None:
    image = _image()
    boxes = np.array([[-5, -3, 15, 17], [20, 10, 40, 30], [3, 2, 13, 12]], dtype=np.float32)
    cropper = make_window_cropper("reference", out_size=16)
    got = cropper.crop(*mirror_pad(image, boxes))
    big = 50
    ref_image = np.pad(image, ((big, big), (big, big), (0, 0)), mode="symmetric")
    expected = cropper.crop(ref_image, boxes + big)
    torch.testing.assert_close(got, expected)


def test_dali_cuts_the_padded_image_like_the_reference() -> None:
    pytest.importorskip("nvidia.dali")
    image = _image(40, 52)
    boxes = np.array([[-8, -8, 24, 24], [30, 20, 62, 52], [10, 4, 42, 36]], dtype=np.float32)
    padded, moved = mirror_pad(image, boxes)
    ref = make_window_cropper("reference", out_size=32).crop(padded, moved)  # no resize: exact
    dali = make_window_cropper("dali", out_size=32, num_threads=1)
    try:
        got = dali.crop(padded, moved)
    finally:
        dali.close()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)


def _action_voc(root: Path) -> Path:
    """Writes a VOC2012-like action set: persons with <actions>, and ImageSets/Action lists."""
    imgs = [
        Img("2012_000001", 60, 40, [Obj("person", 11, 6, 30, 40, actions=("jumping",))]),
        Img(
            "2012_000002",
            60,
            40,
            [
                Obj("dog", 1, 1, 10, 10),  # not a person: the person index still counts it
                Obj("person", 31, 1, 60, 20, actions=("phoning", "jumping")),
                Obj("person", 2, 20, 12, 40, actions=("phoning",)),
            ],
        ),  # fmt: skip
    ]
    write_voc(root, ["dog", "person"], {"train": imgs})
    action = root / "ImageSets" / "Action"
    action.mkdir(parents=True)
    (action / "train.txt").write_text("2012_000001\n2012_000002\n2012_000002\n")
    rows = {"jumping": [("2012_000002", 2, 1), ("2012_000001", 1, 1), ("2012_000002", 3, -1)],
            "phoning": [("2012_000001", 1, -1), ("2012_000002", 2, 1), ("2012_000002", 3, 1)]}  # fmt: skip
    for act, lines in rows.items():
        (action / f"{act}_train.txt").write_text("".join(f"{i} {p} {v:2d}\n" for i, p, v in lines))
    return root


def test_action_windows_read_persons_and_their_labels(tmp_path) -> None:
    root = _action_voc(tmp_path / "voc2012")
    aw = action_windows(root, "train", ("jumping", "phoning"))
    assert aw.image_ids == ("2012_000001", "2012_000002", "2012_000002")
    assert aw.person.tolist() == [1, 2, 3]
    np.testing.assert_allclose(aw.person_boxes, [[10, 5, 30, 40], [30, 0, 60, 20], [1, 19, 12, 40]])
    np.testing.assert_allclose(aw.boxes[0], [2.5, 5, 37.5, 40])  # side 35, centred
    np.testing.assert_allclose(aw.boxes[1], [30, -5, 60, 25])  # leaves the image at the top
    np.testing.assert_array_equal(aw.labels, [[1, -1], [1, 1], [-1, 1]])
    assert aw.labels.dtype == np.int8 and len(aw) == 3


def test_action_windows_check_their_lists(tmp_path) -> None:
    root = _action_voc(tmp_path / "voc2012")
    (root / "ImageSets/Action/phoning_train.txt").write_text("2012_000001 1 -1\n")
    with pytest.raises(InputError, match="phoning_train.txt"):
        action_windows(root, "train", ("jumping", "phoning"))
    (root / "ImageSets/Action/phoning_train.txt").write_text("2012_000002 9 1\n")
    with pytest.raises(InputError, match="person index"):
        action_windows(root, "train", ("phoning",))


@pytest.fixture(scope="module")
def boxed_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("boxed")
    root = small_voc(tmp / "voc")
    ckpt = tiny_trunk(tmp / "trunk.pt")
    config = load_config(None, [
        f"run_dir={tmp / 'runs'}", f"extract.store={tmp / 'store'}", f"data.target={root}",
        "data.train_split=trainval", "extract.workers=1", "extract.backend=reference",
        "windows.grid=boxed", "extract.layers=[c5, fc7]",
    ])  # fmt: skip
    return tmp, root, ckpt, config


@pytest.mark.slow
def test_boxed_extraction_stores_c5_and_fc7_of_mirrored_windows(ray_session, boxed_setup) -> None:
    tmp, root, ckpt, config = boxed_setup
    out = run_extract(config, str(ckpt), progress=False)
    assert out["images"] == 6 and out["windows"] == 7
    fs = FeatureStore(tmp / "store").open(out["feature_set"])
    assert fs.meta["inputs"]["grid"] == {"kind": "boxed"} and fs.layers == {"c5": 4096, "fc7": 1024}
    trunk = load_trunk(str(ckpt))
    featurizer = Featurizer(trunk.model, ["c5", "fc7"], "crop", "reference", mirror=True)
    ds = VocDataset(root)
    items, _ = dataset_items(ds, ["trainval", "test"], config.windows)
    for it in items:  # the actor's torch thread count differs: float16-close, not bit-equal
        expected = featurizer(it.path, it.boxes, it.scale)
        for layer in ("c5", "fc7"):
            np.testing.assert_allclose(
                fs.get(it.image_id, layer).astype(np.float32),
                expected[layer].astype(np.float32), rtol=1e-2, atol=1e-3,
            )  # fmt: skip
        np.testing.assert_array_equal(fs.labels(fs.select(image_ids=[it.image_id])), it.label)
    # fc7 follows from the stored c5 through the trunk's FC6/FC7 (up to float16 storage).
    c5 = torch.from_numpy(fs.get("000002", "c5").astype(np.float32))
    with torch.no_grad():
        fc7 = trunk.model.fc7(trunk.model.fc6(c5)).numpy()
    np.testing.assert_allclose(
        fs.get("000002", "fc7").astype(np.float32), fc7, atol=2e-2, rtol=2e-2
    )
    # 000002's dog window leaves the image: its pixels are the mirrored image, not shifted ones.
    plain = Featurizer(trunk.model, ["fc7"], "crop", "reference")
    it = next(i for i in items if i.image_id == "000002")
    assert not np.array_equal(plain(it.path, it.boxes, it.scale)["fc7"], fs.get("000002", "fc7"))


def test_boxed_grid_refuses_conv_mode(boxed_setup) -> None:
    _, _, ckpt, config = boxed_setup
    config.extract.mode = "conv"
    with pytest.raises(InputError, match="extract.mode"):
        run_extract(config, str(ckpt), progress=False)
    config.extract.mode = "crop"
    with pytest.raises(InputError, match="extract.mode"):
        Featurizer(create_model("alexnet-small", num_classes=2), ["fc7"], "conv", mirror=True)


@pytest.mark.slow
def test_train_head_on_a_boxed_set_frozen_and_unfrozen(ray_session, boxed_setup) -> None:
    from mlt.heads.artifact import load_head
    from mlt.heads.boxed import boxed_image_ids
    from mlt.heads.evaluation import run_evaluate
    from mlt.heads.run import prepare_inputs, run_train_head
    from mlt.heads.unfrozen import UnfrozenHead

    tmp, root, ckpt, config = boxed_setup
    fs_id = run_extract(config, str(ckpt), progress=False)["feature_set"]
    for over in ("head.epochs=2", "head.fca_width=16", "head.train_split=train",
                 "head.val_split=val"):  # fmt: skip
        key, value = over.split("=")
        setattr(config.head, key.split(".")[1], int(value) if value.isdigit() else value)
    inputs = prepare_inputs(config, fs_id, "fc7")
    assert inputs.protocol == "boxed"
    assert inputs.train.image_ids == ("000001", "000002", "000003")
    np.testing.assert_array_equal(inputs.val_gt, [[1, -1], [-1, 1], [-1, 1]])
    fs = inputs.fs  # 000007 holds only a difficult object: no window, and left out of the split
    assert boxed_image_ids(fs, root, ["000006", "000007"], inputs.classes) == ["000006"]

    frozen = run_train_head(config, fs_id, "fc7", progress=False)
    assert frozen["protocol"] == "boxed" and np.isfinite(frozen["val_mAP"])
    config.head.unfreeze = "fc6"
    unfrozen = run_train_head(config, fs_id, "c5", progress=False)
    assert np.isfinite(unfrozen["val_mAP"])
    saved = load_head(unfrozen["run_id"])
    assert isinstance(saved.model, UnfrozenHead) and saved.meta["protocol"] == "boxed"
    ev = run_evaluate(config, unfrozen["run_id"], "test", log=False)  # 000007 has no window
    assert "boxed protocol" in ev["report"] and "(1 windows)" in ev["report"]
    assert np.isfinite(ev["mAP"]) and ev["pointing"] is None
    with pytest.raises(InputError, match="--layer"):
        run_train_head(config, fs_id, "fc7", progress=False)
    config.head.unfreeze = "none"
