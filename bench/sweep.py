"""Head sweeps from the feature store vs computing trunk features on the fly; one by one vs batched.

One process, one feature set, one subset of images (the first N of head.train_split and of
head.val_split), the 16 configurations of the sweep space, the same epochs (no early stopping)
for every path, in one run:

(a) the 16 heads trained one by one from the store (the subset's features read once from the
    LMDB set, then ``train_head``) against the same 16 heads trained with their features
    computed by the trunk every epoch: the epoch's training windows (every positive and the
    background share, as ``epoch_rows`` draws them) and every validation window, through
    ``mlt.extract.Featurizer`` with the set's own trunk checkpoint (meta.json
    ``info.trunk_source``). ``crop`` cuts and resizes each window (the paper's way, per window);
    ``conv`` runs the set's own convolutional mode (C1..C5 once per image, then ROI pooling) and
    reproduces the stored features. Prints seconds, heads per minute and the store's speed-up
    (target >= 50x);
(b) the same 16 heads from the store one by one (``train_head``) against one vectorised pass
    per group (``train_heads_batched``): heads per minute and the ratio, and the largest
    difference of best val mAP between the two (0 for dropout-0 heads up to rounding).

    .venv/bin/python bench/sweep.py --features 50ac6677 [--train-images 40 --val-images 20 --epochs 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

# Run as a script, bench/ comes first on sys.path and bench/featurestore.py would shadow the package.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

REPO = Path(__file__).resolve().parents[1]


def _featurize(
    featurizer, ds, data, scales, rows: np.ndarray, whole_images: bool
) -> tuple[np.ndarray, int]:
    """Returns a (len(data), D) float16 array with ``rows`` filled in by the trunk, and the
    number of windows the trunk computed (conv mode: every window of each image it touched)."""
    computed = 0
    out = np.zeros((len(data), data.dim), dtype=np.float16)
    rows = np.sort(rows)
    images = data.image_index[rows]
    for img in np.unique(images):
        iid = data.image_ids[img]
        path = str(ds.image_path(iid, ds.annotation(iid).filename))
        if whole_images:  # conv mode: the image's every window, exactly as extraction ran
            mine = np.flatnonzero(data.image_index == img)
        else:
            mine = rows[images == img]
        out[mine] = featurizer(path, data.boxes[mine], scales[mine])[next(iter(featurizer.layers))]
        computed += len(mine)
    return out, computed


def train_on_the_fly(featurizer, ds, train, val, scales, hc, classes, gt, k, form, whole_images):
    """Trains one head as ``train_head`` does, its features computed by the trunk every epoch.

    Returns (best val mAP, windows computed).
    """
    from torch import nn

    from mlt.heads.model import Head
    from mlt.heads.train import build_head_optimizer, epoch_rows, evaluate_head

    torch.manual_seed(hc.seed)
    model = Head(train.dim, train.num_classes, hc.fca_width, hc.dropout)
    opt = build_head_optimizer(list(model.parameters()), hc)
    loss_fn = nn.CrossEntropyLoss()
    labels = torch.from_numpy(np.asarray(train.labels, dtype=np.int64))
    best, computed = -1.0, 0
    for epoch in range(1, hc.epochs + 1):
        model.train()
        rows = epoch_rows(train, hc, epoch)
        feats, c = _featurize(featurizer, ds, train, scales["train"], rows, whole_images)
        computed += c
        for s in range(0, len(rows), hc.batch_size):
            batch = np.sort(rows[s : s + hc.batch_size])
            loss = loss_fn(model(torch.from_numpy(feats[batch].astype(np.float32))), labels[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        every = np.arange(len(val))
        val_feats, c = _featurize(featurizer, ds, val, scales["val"], every, whole_images)
        computed += c
        val_now = dataclasses.replace(val, features=val_feats)
        best = max(best, evaluate_head(model, val_now, gt, classes, k, form).mean_ap)
    return best, computed


def main() -> None:
    """Runs (a) and (b) on the same subset; prints the tables."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--features", required=True, help="feature-set id (or prefix) or folder")
    p.add_argument("--store", type=Path, default=REPO / "runs" / "features")
    p.add_argument("--space", type=Path, default=REPO / "configs" / "sweeps" / "heads.yaml")
    p.add_argument("--layer", default="fc7")
    p.add_argument("--train-images", type=int, default=40, help="first N of the train split")
    p.add_argument("--val-images", type=int, default=20, help="first N of the val split")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--modes", default="crop,conv", help="on-the-fly modes to time: crop, conv or both"
    )
    p.add_argument("--trunk", default=None, help="trunk checkpoint (default: the set's own)")
    p.add_argument("--k", type=float, default=5.0)
    args = p.parse_args()

    from featurestore import FeatureSet, FeatureStore
    from mlt.config import HeadConfig
    from mlt.data.voc import VocDataset
    from mlt.extract import Featurizer, load_trunk
    from mlt.heads.batched import group_configs, train_heads_batched
    from mlt.heads.data import load_windows, set_classes, set_dataset, split_image_ids
    from mlt.heads.train import ground_truth, train_head
    from mlt.sweep import head_configs, load_space

    torch.set_num_threads(args.threads)
    ref = Path(args.features)
    if ref.is_dir():
        fs = FeatureSet(ref)
    else:
        store = FeatureStore(args.store)
        fs = store.open(store.resolve(args.features))
    classes, root = set_classes(fs), set_dataset(fs)
    hc0 = HeadConfig(epochs=args.epochs, patience=args.epochs)
    train_ids = split_image_ids(root, hc0.train_split)[: args.train_images]
    val_ids = split_image_ids(root, hc0.val_split)[: args.val_images]
    for ids in (train_ids, val_ids):  # the window lists (manifest) both sides need, untimed
        fs.labels(fs.select(image_ids=ids))
    t0 = time.perf_counter()
    train = load_windows(fs, train_ids, args.layer)
    val = load_windows(fs, val_ids, args.layer)
    read_s = time.perf_counter() - t0
    gt = ground_truth(root, val.image_ids, classes)
    configs = head_configs(hc0, load_space(args.space).grid())
    n = len(configs)
    form = "voc07"
    inputs = fs.meta.get("inputs", {})
    print(f"\nsweep bench: feature set {fs.id[:8]} ({args.layer}, {train.dim}-d, {inputs.get('mode')} mode), "
          f"{len(train_ids)} train / {len(val_ids)} val images ({len(train):,} / {len(val):,} windows), "
          f"{n} head configs ({args.space.name}), {args.epochs} epochs each, {args.threads} threads", flush=True)  # fmt: skip

    # (a) from the store, one by one (after an untimed warm-up of torch and the caches)
    train_head(train, val, configs[0].model_copy(update={"epochs": 1}), classes, gt, args.k, form)
    start = time.perf_counter()
    one = [train_head(train, val, hc, classes, gt, args.k, form) for hc in configs]
    one_s = time.perf_counter() - start
    print(f"store: read {read_s:.2f} s, {n} heads one by one {one_s:.1f} s", flush=True)

    # (b) batched from the store
    start = time.perf_counter()
    batched = train_heads_batched(train, val, configs, classes, gt, args.k, form)
    batched_s = time.perf_counter() - start
    passes = len(group_configs(configs))
    print(f"store: {n} heads batched {batched_s:.1f} s", flush=True)

    # (a) on the fly
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    source = args.trunk or str(REPO / fs.meta.get("info", {}).get("trunk_source", ""))
    if modes and not args.trunk and not Path(source).is_file():
        sys.exit(f"the set's trunk checkpoint {source} is gone: pass --trunk (or --modes '')")
    trunk = load_trunk(source) if modes else None
    ds = VocDataset(root)
    scales = {
        name: np.asarray(fs.column("scale", fs.select(image_ids=list(d.image_ids))), np.float32)
        for name, d in (("train", train), ("val", val))
    }
    fly = {}
    for mode in modes:
        featurizer = Featurizer(trunk.model, [args.layer], mode, "reference",
                                conv_passes=int(inputs.get("conv_passes", 1)))  # fmt: skip
        first = np.flatnonzero(val.image_index == 0)
        _featurize(featurizer, ds, val, scales["val"], first, mode == "conv")  # warm-up, untimed
        if mode == "conv":  # the set's own mode: the same features as the store
            sample, _ = _featurize(featurizer, ds, val, scales["val"], np.arange(len(val)), True)
            diff = float(
                np.abs(sample.astype(np.float32) - np.asarray(val.features, np.float32)).max()
            )
            print(f"on the fly, conv mode vs stored features: max |diff| {diff:.4f}", flush=True)
        start = time.perf_counter()
        maps, computed = [], 0
        for hc in configs:
            m, c = train_on_the_fly(featurizer, ds, train, val, scales, hc, classes, gt, args.k,
                                    form, mode == "conv")  # fmt: skip
            maps.append(m)
            computed += c
        fly[mode] = (time.perf_counter() - start, computed, maps)
        print(f"on the fly, {mode} mode: {fly[mode][0]:.1f} s", flush=True)

    def hpm(seconds: float) -> str:
        return f"{60 * n / seconds:10.1f}"

    one_total, batched_total = read_s + one_s, read_s + batched_s
    print(f"\n(a) {n} heads from the store vs trunk features computed on the fly "
          f"({args.epochs} epochs, validation every epoch)")  # fmt: skip
    print(f"{'features':<40} {'seconds':>9} {'heads/min':>10}")
    print(f"{'store, read once + one by one':<40} {one_total:9.1f} {hpm(one_total)}")
    print(f"{'store, read once + batched':<40} {batched_total:9.1f} {hpm(batched_total)}")
    for mode, (seconds, computed, _) in fly.items():
        label = f"on the fly, {mode} mode ({computed / seconds:,.0f} windows/s)"
        print(f"{label:<40} {seconds:9.1f} {hpm(seconds)}")
    if fly:
        print(
            f"store speed-up (on-the-fly seconds / store seconds): {'one by one':>12} {'batched':>9}"
        )
        for mode, (seconds, _, _) in fly.items():
            label = f"  vs {mode} mode on the fly"
            print(f"{label:<53} {seconds / one_total:11.1f}x {seconds / batched_total:8.1f}x")
        if "crop" in fly:
            ratio = fly["crop"][0] / one_total
            print(f"target >= 50x (crop on the fly vs the store, both one by one): "
                  f"{'met' if ratio >= 50 else 'not met'} ({ratio:.1f}x)")  # fmt: skip
        if "conv" in fly:
            d = max(abs(a.best_val_map - b) for a, b in zip(one, fly["conv"][2], strict=True))
            print(
                f"best val mAP, store vs conv mode on the fly: max |diff| {d:.2e}"
                + ("" if args.trunk else " (same trunk, same features)")
            )

    print(f"\n(b) {n} heads from the store: one by one vs batched ({passes} vectorised passes)")
    print(f"{'path':<34} {'seconds':>9} {'heads/min':>10} {'ratio':>15}")
    print(f"{'one by one (train_head)':<34} {one_s:9.1f} {hpm(one_s)} {'1.0x':>15}")
    print(f"{'batched (train_heads_batched)':<34} {batched_s:9.1f} {hpm(batched_s)} {one_s / batched_s:14.2f}x")  # fmt: skip
    same = [i for i, hc in enumerate(configs) if hc.dropout == 0]
    if same:
        d = max(abs(one[i].best_val_map - batched[i].best_val_map) for i in same)
        print(
            f"best val mAP, batched vs one by one, {len(same)} dropout-0 heads: max |diff| {d:.2e}"
        )


if __name__ == "__main__":
    main()
