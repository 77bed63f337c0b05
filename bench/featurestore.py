"""Feature store read throughput against a raw numpy memmap of the same float16 array.

Writes one feature set (N images x W windows x D dims, float16) and the same array as a raw
``.npy`` file, then measures both in the same run: random batches of 256 windows (random
images, random windows) and whole-image reads, warm (after a full read pass) and cold (files
closed and evicted with posix_fadvise(DONTNEED); the timed call opens and reads). Every read
copies, so both sides touch every byte: the memmap side with np.take (faster than fancy
indexing) and image slices, the store side with FeatureSet.read_rows and FeatureSet.get.
Prints windows/s, MB/s (1e6 bytes of float16), the store/memmap ratio and the disk size
against the raw float16 bytes; then the aggregate throughput of ``--readers`` processes
reading at once against one (each read checked against the raw array).

    .venv/bin/python bench/featurestore.py                # ~1 GB each, < 2 minutes on 2 cores
    .venv/bin/python bench/featurestore.py --dim 4096 --images 250
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import mmap
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Run as a script, this file's folder comes first on sys.path and the file's name would shadow
# the featurestore package: drop that entry before importing it.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

from featurestore import FeatureStore, feature_set_id  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = p.add_argument
    add("--images", type=int, default=2000, help="images in the set (default 2000)")
    add("--windows", type=int, default=500, help="windows per image (default 500)")
    add("--dim", type=int, default=512, help="feature dims (default 512; FC7 is 4096)")
    add("--batch", type=int, default=256, help="windows per random batch (default 256)")
    add("--batches", type=int, default=100, help="random batches per warm round (default 100)")
    add(
        "--image-reads",
        type=int,
        default=100,
        help="whole-image reads per warm round (default 100)",
    )
    add(
        "--rounds",
        type=int,
        default=21,
        help="warm rounds, store and memmap alternating (default 21)",
    )
    add("--cold-batches", type=int, default=40, help="random batches per cold round (default 40)")
    add(
        "--cold-image-reads",
        type=int,
        default=200,
        help="whole-image reads per cold round (default 200)",
    )
    add("--cold-rounds", type=int, default=3, help="cold rounds (default 3)")
    add(
        "--dir",
        type=Path,
        default=None,
        help="work folder, kept (default: a temporary folder, removed)",
    )
    add("--seed", type=int, default=0, help="seed of the data and the read order (default 0)")
    add(
        "--readers",
        type=int,
        default=4,
        help="concurrent reader processes, against one (default 4; 0 skips)",
    )
    return p.parse_args()


# -- page cache ---------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def drop_cache(path: Path) -> None:
    """Asks the kernel to evict a (closed, clean) file's pages from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident(path: Path) -> float:
    """Returns the fraction of a file's pages in the page cache (mincore), or NaN if unknown."""
    size = path.stat().st_size
    if not size:
        return float("nan")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) as m:
        addr = np.frombuffer(m, np.uint8).ctypes.data
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = (ctypes.c_ubyte * pages)()
        if _libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) != 0:
            return float("nan")
        return float(np.frombuffer(vec, np.uint8).astype(bool).mean())


# -- data ---------------------------------------------------------------------------------------


def image_features(rng: np.random.Generator, windows: int, dim: int) -> np.ndarray:
    return (rng.standard_normal((windows, dim), dtype=np.float32) * 3).astype(np.float16)


def write_both(work: Path, args: argparse.Namespace) -> tuple[str, Path, float, float]:
    """Writes the feature set and the raw .npy; returns (set id, npy path, store s, npy s)."""
    n, w, d = args.images, args.windows, args.dim
    inputs = {
        "trunk_digest": "bench", "layers": ["fc7"], "grid": {"windows": w}, "preprocessing": {},
        "mode": "bench", "dataset_digest": f"{n}x{w}x{d}-{args.seed}", "extractor_version": "bench",
    }  # fmt: skip
    store = FeatureStore(work / "store")
    npy = work / "raw.npy"
    raw = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float16, shape=(n * w, d))
    rng = np.random.default_rng(args.seed)
    boxes = np.tile(np.arange(4, dtype=np.float32), (w, 1))
    windows = {"boxes": boxes, "scale": 1.0, "label": np.arange(w) % 21, "split": "trainval"}
    t_store = t_npy = 0.0
    writer = store.writer(inputs, {"fc7": d})
    chunk = max(1, (32 << 20) // (w * d * 2))  # ~32 MB per transaction
    for start in range(0, n, chunk):
        items = [
            (f"{i:07d}", {"fc7": image_features(rng, w, d)}, windows)
            for i in range(start, min(n, start + chunk))
        ]
        t0 = time.perf_counter()
        writer.put_many(items)
        t1 = time.perf_counter()
        for i, (_, feats, _) in zip(range(start, n), items, strict=False):
            raw[i * w : (i + 1) * w] = feats["fc7"]
        t_npy += time.perf_counter() - t1
        t_store += t1 - t0
    t0 = time.perf_counter()
    writer.commit()
    t_store += time.perf_counter() - t0
    t0 = time.perf_counter()
    raw.flush()
    del raw
    fd = os.open(npy, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    t_npy += time.perf_counter() - t0
    assert store.exists(feature_set_id(inputs))
    return feature_set_id(inputs), npy, t_store, t_npy


# -- measurements -------------------------------------------------------------------------------


class Sides:
    """The two readers under test, reopened on demand (cold runs close them first)."""

    def __init__(self, store: FeatureStore, set_id: str, npy: Path, windows: int) -> None:
        self.store, self.set_id, self.npy, self.windows = store, set_id, npy, windows
        self.fs = self.mm = self.ids = None

    def open(self) -> None:
        self.fs = self.store.open(self.set_id)
        self.mm = np.load(self.npy, mmap_mode="r")
        self.ids = self.fs.image_ids()

    def close(self) -> None:
        if self.fs is not None:
            self.fs.close()
        self.fs = self.mm = None
        gc.collect()

    def files(self) -> list[Path]:
        return [
            *(self.store.path(self.set_id)).rglob("*.mdb"),
            self.store.path(self.set_id) / "manifest.parquet",
            self.npy,
        ]

    # Each reader returns the number of windows it read.
    def store_batches(self, batches: np.ndarray) -> int:
        fs = self.fs or self.store.open(self.set_id)
        self.fs = fs
        for rows in batches:
            fs.read_rows(rows)
        return batches.size

    def mm_batches(self, batches: np.ndarray) -> int:
        mm = self.mm if self.mm is not None else np.load(self.npy, mmap_mode="r")
        self.mm = mm
        for rows in batches:
            np.take(mm, rows, axis=0)  # the fastest numpy gather (faster than mm[rows])
        return batches.size

    def store_images(self, images: np.ndarray) -> int:
        fs = self.fs or self.store.open(self.set_id)
        self.fs = fs
        ids = self.ids or fs.image_ids()
        out = np.empty((self.windows, fs.layers["fc7"]), np.float16)
        for i in images:
            np.copyto(out, fs.get(ids[i]))
        return len(images) * self.windows

    def mm_images(self, images: np.ndarray) -> int:
        mm = self.mm if self.mm is not None else np.load(self.npy, mmap_mode="r")
        self.mm = mm
        w = self.windows
        out = np.empty((w, mm.shape[1]), np.float16)
        for i in images:
            np.copyto(out, mm[i * w : (i + 1) * w])
        return len(images) * w


def timed(fn: Callable[[np.ndarray], int], arg: np.ndarray) -> float:
    """Returns windows per second of one call."""
    t0 = time.perf_counter()
    n = fn(arg)
    return n / (time.perf_counter() - t0)


def compare(
    sides: Sides, store_fn: Callable, mm_fn: Callable, make_arg: Callable[[], np.ndarray], rounds: int,
    cold: bool, residency: list[float],
) -> dict[str, float]:  # fmt: skip
    """Returns median windows/s of each side and the median of the per-round ratios.

    Each round reads the same fresh random input on both sides, in alternating order, so
    drift from other load on the machine hits both alike.
    """
    s_rates, m_rates = [], []
    for r in range(rounds):
        arg = make_arg()
        pair = [(s_rates, store_fn), (m_rates, mm_fn)]
        for rates, fn in pair if r % 2 == 0 else pair[::-1]:
            if cold:
                sides.close()
                for f in sides.files():
                    drop_cache(f)
                residency.append(max(resident(f) for f in sides.files()))
            rates.append(timed(fn, arg))
    ratios = [s / m for s, m in zip(s_rates, m_rates, strict=True)]
    return {
        "store": statistics.median(s_rates),
        "memmap": statistics.median(m_rates),
        "ratio": statistics.median(ratios),
    }


def reader_process(
    store_dir: str, set_id: str, npy: str, n: int, w: int, batch: int, count: int, seed: int,
    start_at: float,
) -> tuple[int, float, float, int]:  # fmt: skip
    """One reader process (spawned): opens the store, waits for the common start time, reads
    ``count`` random batches; returns (windows read, seconds reading, seconds from the common
    start to its end, mismatches). Every batch is then checked against the raw memmap."""
    fs = FeatureStore(Path(store_dir)).open(set_id)
    mm = np.load(npy, mmap_mode="r")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, (count, batch)) * w + rng.integers(0, w, (count, batch))
    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.perf_counter()
    got = [fs.read_rows(r) for r in rows]
    seconds = time.perf_counter() - t0
    until_end = time.time() - start_at
    bad = sum(not np.array_equal(g, np.take(mm, r, axis=0)) for g, r in zip(got, rows, strict=True))
    fs.close()
    return rows.size, seconds, until_end, bad


def concurrent_reads(work: Path, set_id: str, npy: Path, args: argparse.Namespace) -> None:
    """Prints warm random-batch throughput of 1 and ``args.readers`` reader processes at once
    (spawned, each with its own reader), every read checked against the raw array."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    n, w = args.images, args.windows
    for f in [*(work / "store").rglob("*.mdb"), npy]:  # warm: the cold rounds evicted the files
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    print()
    print(
        f"concurrent readers (spawned processes, warm, {args.batches} random {args.batch}-window batches each):"
    )
    print("| readers | total windows/s | per reader | mismatches |")
    print("|---:|---:|---:|---:|")
    for k in sorted({1, args.readers}):
        job = (str(work / "store"), set_id, str(npy), n, w, args.batch, args.batches)
        with ProcessPoolExecutor(k, mp_context=get_context("spawn")) as pool:
            start_at = time.time() + 5.0  # after every process has started and opened the store
            futures = [
                pool.submit(reader_process, *job, args.seed + 10 + i, start_at) for i in range(k)
            ]
            done = [f.result() for f in futures]
        wall = max(d[2] for d in done)  # from the common start to the last reader's end
        windows = sum(d[0] for d in done)
        bad = sum(d[3] for d in done)
        per = statistics.mean(d[0] / d[1] for d in done)
        print(f"| {k} | {windows / wall:,.0f} | {per:,.0f} | {bad} |")
        assert bad == 0, "a concurrent reader read values that differ from the written array"


def main() -> None:
    args = parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="mlt-bench-fs-"))
    work.mkdir(parents=True, exist_ok=True)
    n, w, d = args.images, args.windows, args.dim
    raw_bytes = n * w * d * 2
    print(
        f"feature store benchmark: {n} images x {w} windows x {d} dims float16 = {raw_bytes / 1e9:.2f} GB raw"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; work folder {work}"
    )
    try:
        set_id, npy, t_store, t_npy = write_both(work, args)
        store = FeatureStore(work / "store")
        disk = store.open(set_id).disk_bytes()
        print(
            f"write: store {raw_bytes / t_store / 1e6:.0f} MB/s, raw .npy {raw_bytes / t_npy / 1e6:.0f} MB/s"
        )
        print(
            f"disk:  store {disk / 1e6:.1f} MB = {disk / raw_bytes:.4f}x raw; .npy {npy.stat().st_size / raw_bytes:.4f}x raw"
        )

        sides = Sides(store, set_id, npy, w)
        rng = np.random.default_rng(args.seed + 1)

        def batches(count: int) -> Callable[[], np.ndarray]:
            return lambda: (
                rng.integers(0, n, (count, args.batch)) * w
                + rng.integers(0, w, (count, args.batch))
            )

        def images(count: int) -> Callable[[], np.ndarray]:
            return lambda: rng.integers(0, n, count)

        # Warm: one full read pass of both files first.
        sides.open()
        sides.store_images(np.arange(n))
        sides.mm_images(np.arange(n))
        check = batches(1)()[0]
        assert np.array_equal(sides.fs.read_rows(check), sides.mm[check]), "store and memmap differ"
        residency: list[float] = []
        batch_name = f"random {args.batch}-window batches"
        results = {
            (batch_name, "warm"): compare(sides, sides.store_batches, sides.mm_batches, batches(args.batches), args.rounds, False, residency),
            ("whole-image reads", "warm"): compare(sides, sides.store_images, sides.mm_images, images(args.image_reads), args.rounds, False, residency),
            (batch_name, "cold"): compare(sides, sides.store_batches, sides.mm_batches, batches(args.cold_batches), args.cold_rounds, True, residency),
            ("whole-image reads", "cold"): compare(sides, sides.store_images, sides.mm_images, images(args.cold_image_reads), args.cold_rounds, True, residency),
        }  # fmt: skip
        sides.close()

        print(
            f"cold: files closed and evicted with posix_fadvise(DONTNEED) before each cold call, which "
            f"then opens and reads (at most {max(residency):.1%} of any file resident, by mincore)"
        )
        print(
            f"warm: median of {args.rounds} rounds; cold: median of {args.cold_rounds}; ratio: median of per-round ratios"
        )
        print()
        cols = [
            "read",
            "cache",
            "store win/s",
            "store MB/s",
            "memmap win/s",
            "memmap MB/s",
            "store/memmap",
        ]
        print("| " + " | ".join(cols) + " |")
        print("|" + "|".join(["---"] * 2 + ["---:"] * 5) + "|")
        rowbytes = d * 2
        for (kind, cache), r in results.items():
            s, m = r["store"], r["memmap"]
            cells = [
                kind,
                cache,
                f"{s:,.0f}",
                f"{s * rowbytes / 1e6:,.0f}",
                f"{m:,.0f}",
                f"{m * rowbytes / 1e6:,.0f}",
                f"{r['ratio']:.2f}",
            ]
            print("| " + " | ".join(cells) + " |")
        print()
        worst = min(r["ratio"] for r in results.values())
        ok_read, ok_disk = worst >= 0.8, disk / raw_bytes <= 1.1
        print(
            f"targets: read throughput >= 0.80x memmap: {'met' if ok_read else 'NOT met'} (worst {worst:.2f}x); "
            f"disk <= 1.10x raw: {'met' if ok_disk else 'NOT met'} ({disk / raw_bytes:.4f}x)"
        )
        if args.readers > 0:
            concurrent_reads(work, set_id, npy, args)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
