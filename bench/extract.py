"""Window feature extraction speed and agreement on TinyVOC: per-crop (reference, DALI) vs conv mode.

One process, the same images and trunk for every mode, in one run. Prints windows/s per mode,
the ratio conv/per-crop (target ≥ 10x), the largest DALI-vs-reference crop difference, and the
agreement of per-crop and convolutional-mode FC7 features (Pearson correlation over all values,
mean per-window cosine).

    .venv/bin/python bench/extract.py --images 20 [--trunk runs/cpu/…/checkpoint.pt]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

# Run as a script, bench/ comes first on sys.path and bench/featurestore.py would shadow the package.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

DATA = Path(os.environ.get("MLT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    """Runs every mode on the same images; prints the table."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", type=Path, default=DATA / "tinyvoc" / "TinyVOC")
    p.add_argument(
        "--images", type=int, default=20, help="test images to extract (first N of trainval)"
    )
    p.add_argument(
        "--trunk",
        default=None,
        help="trunk checkpoint/run (default: alexnet-small, random weights)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--conv-passes", default="1,3,9", help="conv-mode variants to time")
    args = p.parse_args()

    from mlt.config import WindowsConfig
    from mlt.data.voc import VocDataset
    from mlt.decode import make_window_cropper
    from mlt.extract import Featurizer, image_windows, load_trunk
    from mlt.models import create_model

    torch.set_num_threads(args.threads)
    ds = VocDataset(args.dataset)
    wc = WindowsConfig()
    anns = ds.load("trainval")[: args.images]
    items = [
        (str(ds.image_path(a.image_id, a.filename)), *image_windows(a, ds.classes, wc)[:2])
        for a in anns
    ]
    n_windows = sum(len(b) for _, b, _ in items)
    if args.trunk:
        model = load_trunk(args.trunk).model
    else:
        torch.manual_seed(0)
        model = create_model("alexnet-small", num_classes=200).eval()

    results, feats = {}, {}
    modes = [
        ("per-crop reference", "crop", "reference", 1),
        ("per-crop DALI-CPU", "crop", "dali", 1),
    ]
    modes += [
        (f"conv, {p} passes", "conv", "reference", int(p)) for p in args.conv_passes.split(",")
    ]
    for name, mode, backend, passes in modes:
        f = Featurizer(model, ["fc7"], mode, backend, args.batch, conv_passes=passes)
        f(*items[0])  # warm-up (DALI pipeline build, allocator)
        start = time.perf_counter()
        feats[name] = [f(*it)["fc7"].astype(np.float32) for it in items]
        results[name] = n_windows / (time.perf_counter() - start)

    ref = make_window_cropper(
        "reference", out_size=model.input_size, mean=model.mean, std=model.std
    )
    dali = make_window_cropper(
        "dali", out_size=model.input_size, mean=model.mean, std=model.std, num_threads=args.threads
    )
    max_diff = max(
        float((ref.crop(path, b) - dali.crop(path, b)).abs().max()) for path, b, _ in items[:5]
    )

    a = np.concatenate(feats["per-crop reference"])
    agreement = []
    for name in results:
        if name.startswith("conv"):
            c = np.concatenate(feats[name])
            cos = (a * c).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(c, axis=1) + 1e-12)
            agreement.append(
                (name, float(np.corrcoef(a.ravel(), c.ravel())[0, 1]), float(cos.mean()))
            )

    print(f"\nextraction on {len(items)} TinyVOC images, {n_windows:,} windows, {model.input_size} px, "
          f"{args.threads} threads, {'given trunk' if args.trunk else 'alexnet-small (random weights)'}")  # fmt: skip
    base = results["per-crop reference"]
    print(f"{'mode':<22} {'windows/s':>10} {'vs per-crop ref':>16}")
    for name, rate in results.items():
        print(f"{name:<22} {rate:>10.0f} {rate / base:>15.2f}x")
    print(
        f"DALI-CPU vs reference crops: max |diff| {max_diff:.3f} (normalised units, first 5 images)"
    )
    for name, pearson, cos in agreement:
        print(f"per-crop vs {name} FC7: Pearson r {pearson:.3f}, mean window cosine {cos:.3f}")


if __name__ == "__main__":
    main()
