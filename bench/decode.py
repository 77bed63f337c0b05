"""Decode/crop throughput: the reference backend against DALI on the CPU, on the shared data.

Two measurements in one run, side by side:

- pretraining loader, training mode (decode, random resized crop, flip, normalise) on
  Tiny-ImageNet train JPEGs (64x64): reference with 0 and with 2 DataLoader workers, and DALI
  on the CPU; images/s over up to ``--batches`` batches or ``--seconds`` per run, counted
  after the first batch (so worker start-up and pipeline build are left out), files read once
  beforehand so every backend finds them in the page cache;
- window cropper on ``--images`` TinyVOC scenes with the paper's grid (9 scales, stride side/3:
  ~360-690 windows per 128-224 px scene), each window resized to ``--out-size``; windows/s for
  ``crop_many`` over ``--chunk`` images at a time, decode included.

Every backend runs ``--repeats`` times, interleaved with the others so that a burst of load from
other processes hits all of them, and keeps its best run. Prints the load average before and
after, and one table per measurement with each row's ratio to the first.

    .venv/bin/python bench/decode.py                       # ~1-2 minutes on 2 cores
    .venv/bin/python bench/decode.py --batches 50 --images 20
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

# Run as a script, this file's folder comes first on sys.path: drop it so nothing here shadows
# an installed module.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

from mlt.decode import make_train_loader, make_window_cropper  # noqa: E402
from mlt.decode.images import image_size  # noqa: E402
from mlt.windows import window_grid  # noqa: E402

DEFAULT_DATA = Path(
    os.environ.get("MLT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help=f"shared data folder (default {DEFAULT_DATA})",
    )
    p.add_argument("--batch-size", type=int, default=128, help="loader batch size (default 128)")
    p.add_argument("--input-size", type=int, default=64, help="loader input size (default 64)")
    p.add_argument(
        "--batches", type=int, default=60, help="most batches per loader run (default 60)"
    )
    p.add_argument(
        "--seconds", type=float, default=10.0, help="time budget per loader run (default 10)"
    )
    p.add_argument("--threads", type=int, default=2, help="DALI threads (default 2)")
    p.add_argument("--images", type=int, default=50, help="TinyVOC scenes for windows (default 50)")
    p.add_argument("--out-size", type=int, default=64, help="window output size (default 64)")
    p.add_argument("--chunk", type=int, default=8, help="scenes per crop_many call (default 8)")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="interleaved runs per backend, best kept (default 3)",
    )
    p.add_argument("--skip-loader", action="store_true", help="only measure the window cropper")
    p.add_argument("--skip-windows", action="store_true", help="only measure the loader")
    return p.parse_args()


def tiny_imagenet_files(root: Path, count: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """Returns ``count`` random Tiny-ImageNet train files and their class indices."""
    wnids = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    files, labels = [], []
    for k, wnid in enumerate(wnids):
        for path in sorted((root / "train" / wnid / "images").glob("*.JPEG")):
            files.append(str(path))
            labels.append(k)
    pick = np.random.default_rng(seed).permutation(len(files))[:count]
    return [files[i] for i in pick], [labels[i] for i in pick]


def time_loader(loader, max_batches: int, seconds: float) -> tuple[float, int, float]:
    """Returns (images/s after the first batch, batches timed, first-batch latency in s)."""
    start = time.perf_counter()
    first = None
    images = batches = 0
    for x, _ in loader:
        now = time.perf_counter()
        if first is None:
            first = now
        else:
            images += len(x)
            batches += 1
        if batches + 1 >= max_batches or now - start > seconds:
            break
    elapsed = time.perf_counter() - first
    loader.close()
    return images / elapsed if elapsed > 0 else float("nan"), batches, first - start


def bench_loader(args: argparse.Namespace) -> list[tuple[str, float, str]]:
    files, labels = tiny_imagenet_files(
        args.data / "tiny-imagenet-200", args.batch_size * args.batches
    )
    for path in files:  # warm the page cache, so no backend pays for the first disk reads
        Path(path).read_bytes()
    common = dict(batch_size=args.batch_size, input_size=args.input_size, training=True, seed=0)
    configs = [
        ("reference, 0 workers", "reference", 0),
        ("reference, 2 workers", "reference", 2),
        (f"DALI CPU, {args.threads} threads", "dali", args.threads),
    ]
    runs: dict[str, list[tuple[float, int, float]]] = {name: [] for name, _, _ in configs}
    for r in range(args.repeats):  # interleaved, so a burst of load elsewhere hits every backend
        for name, backend, threads in configs:
            loader = make_train_loader(
                files, labels, backend=backend, num_threads=threads, **common
            )
            loader.set_epoch(r)
            runs[name].append(time_loader(loader, args.batches, args.seconds))
            print(f"  round {r + 1}, {name}: {runs[name][-1][0]:,.0f} images/s", flush=True)
    rows = []
    for name, results in runs.items():
        rate, batches, latency = max(results)
        spread = ", ".join(f"{x[0]:,.0f}" for x in results)
        rows.append(
            (name, rate, f"best of {spread}; {batches} batches; first batch {latency:.2f} s")
        )
    return rows


def bench_windows(args: argparse.Namespace) -> tuple[list[tuple[str, float, str]], int]:
    folder = args.data / "tinyvoc" / "TinyVOC" / "JPEGImages"
    paths = sorted(str(p) for p in folder.glob("*.jpg"))[: args.images]
    items = []
    for path in paths:
        height, width = image_size(path)
        items.append((path, window_grid(width, height).boxes))
    total = sum(len(b) for _, b in items)
    croppers = {
        "reference": make_window_cropper("reference", out_size=args.out_size),
        f"DALI CPU, {args.threads} threads": make_window_cropper(
            "dali", out_size=args.out_size, num_threads=args.threads
        ),
    }
    seconds: dict[str, list[float]] = {name: [] for name in croppers}
    for cropper in croppers.values():
        cropper.crop_many(items[:1])  # warm-up: pipeline build, first allocations
    for r in range(args.repeats):  # interleaved, best kept
        for name, cropper in croppers.items():
            start = time.perf_counter()
            for at in range(0, len(items), args.chunk):
                cropper.crop_many(items[at : at + args.chunk])
            seconds[name].append(time.perf_counter() - start)
            print(
                f"  round {r + 1}, {name}: {total / seconds[name][-1]:,.0f} windows/s", flush=True
            )
    rows = []
    for name, cropper in croppers.items():
        cropper.close()
        spread = ", ".join(f"{total / t:,.0f}" for t in seconds[name])
        rows.append((name, total / min(seconds[name]), f"best of {spread}"))
    return rows, total


def table(title: str, unit: str, rows: list[tuple[str, float, str]]) -> str:
    """Returns a Markdown table of the rows with each rate's ratio to the first row's."""
    base = rows[0][1]
    lines = [f"### {title}", "", f"| backend | {unit} | ratio | notes |", "|---|---:|---:|---|"]
    for name, rate, note in rows:
        lines.append(f"| {name} | {rate:,.0f} | {rate / base:.2f}x | {note} |")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    for need in (args.data / "tiny-imagenet-200", args.data / "tinyvoc" / "TinyVOC"):
        if not need.exists():
            print(f"data not found: {need} (set --data or MLT_DATA)", file=sys.stderr)
            return 2
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"# decode benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, torch threads {torch.get_num_threads()}", flush=True)  # fmt: skip
    load_before = os.getloadavg()
    out = []
    if not args.skip_loader:
        print("pretraining loader (training mode) ...", flush=True)
        title = (f"Pretraining loader: Tiny-ImageNet train, batch {args.batch_size}, input {args.input_size}, "
                 "random resized crop + flip")  # fmt: skip
        out.append(table(title, "images/s", bench_loader(args)))
    if not args.skip_windows:
        print("window cropper ...", flush=True)
        rows, total = bench_windows(args)
        title = (f"Window cropper: {args.images} TinyVOC scenes, {total} windows (paper grid), "
                 f"out {args.out_size}, {args.chunk} scenes per call")  # fmt: skip
        out.append(table(title, "windows/s", rows))
    load_after = os.getloadavg()
    print()
    print("\n\n".join(out))
    print(f"\n1-minute load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after "
          f"({os.cpu_count()} CPUs)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
