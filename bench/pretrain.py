"""Pretraining throughput: a plain torch loop vs Ray Train with 1 and 2 workers, DALI-CPU vs reference.

Every cell trains alexnet-small on real Tiny-ImageNet images for the same number of timed
steps (after warm-up steps), with the same per-process torch thread budget, and reports
training images/s (all workers together). Targets (issue 3): Ray Train's overhead at 1 worker
≤ 10% against the plain loop; DALI-CPU ≥ the reference loader.

    .venv/bin/python bench/pretrain.py --steps 30 --warmup 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

# Run as a script, bench/ comes first on sys.path and bench/featurestore.py would shadow the package.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

DATA = Path(os.environ.get("MLT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def measure(cfg: dict) -> float:
    """Trains ``cfg['steps']`` timed batches (after warm-up); returns images/s of this process."""
    import torch.distributed as dist

    from mlt.config import PretrainConfig
    from mlt.decode import make_train_loader
    from mlt.models import create_model
    from mlt.train.loop import build_optimizer

    torch.set_num_threads(cfg["threads"])
    rank, world = cfg.get("rank", 0), cfg.get("world", 1)
    model = create_model("alexnet-small", num_classes=cfg["classes"])
    if cfg.get("ddp"):
        import ray.train.torch

        model = ray.train.torch.prepare_model(model)
    optimizer = build_optimizer(model, PretrainConfig())
    spec = model.module if hasattr(model, "module") else model
    loader = make_train_loader(
        cfg["files"], cfg["labels"], backend=cfg["backend"], batch_size=cfg["batch"], input_size=64,
        mean=spec.mean, std=spec.std, training=True, shard_id=rank, num_shards=world, seed=0,
        num_threads=cfg["loader_threads"], drop_last=True,
    )  # fmt: skip
    loss_fn = torch.nn.CrossEntropyLoss()
    n = 0
    start = None
    batches = iter(loader)
    for step in range(cfg["warmup"] + cfg["steps"]):
        if step == cfg["warmup"]:
            if dist.is_initialized():
                dist.barrier()
            start = time.perf_counter()
        try:
            images, labels = next(batches)
        except StopIteration:
            loader.set_epoch(step)
            batches = iter(loader)
            images, labels = next(batches)
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= cfg["warmup"]:
            n += labels.shape[0]
    elapsed = time.perf_counter() - start
    loader.close()
    return n / elapsed


def ray_worker(cfg: dict) -> None:
    """Ray Train worker: measures, then reports the sum of all ranks' images/s."""
    import ray.train
    import torch.distributed as dist

    ctx = ray.train.get_context()
    cfg = {**cfg, "rank": ctx.get_world_rank(), "world": ctx.get_world_size(), "ddp": True}
    rate = torch.tensor([measure(cfg)], dtype=torch.float64)
    dist.all_reduce(rate)
    # Ray Train V2 keeps only metrics that come with a checkpoint: attach an empty one.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = ray.train.Checkpoint.from_directory(tmp) if ctx.get_world_rank() == 0 else None
        ray.train.report({"images_per_s": float(rate)}, checkpoint=ckpt)


def run_ray(cfg: dict, workers: int, storage: Path) -> float:
    """Returns images/s of a Ray Train run with ``workers`` CPU workers."""
    import ray.train
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        ray_worker, train_loop_config=cfg,
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=False),
        run_config=ray.train.RunConfig(name=f"bench-{workers}-{cfg['backend']}-{time.time_ns()}", storage_path=str(storage)),
    )  # fmt: skip
    return float(trainer.fit().metrics["images_per_s"])


def main() -> None:
    """Runs every cell and prints the table with ratios."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--source", type=Path, default=DATA / "tiny-imagenet-200")
    p.add_argument("--classes", type=int, default=20, help="source classes (images_per_class each)")
    p.add_argument("--images-per-class", type=int, default=100)
    p.add_argument("--batch", type=int, default=64, help="per-worker batch")
    p.add_argument("--steps", type=int, default=30, help="timed steps per cell")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads of the whole budget (split over workers)",
    )
    p.add_argument("--backends", default="reference,dali")
    p.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = p.parse_args()

    from mlt.data.source import read_source
    from mlt.data.subsets import select_classes
    from mlt.raysession import ensure_ray

    all_wnids = read_source(args.source, "train", images_per_class=1).classes
    classes = select_classes(all_wnids, "random", n=args.classes, seed=0)
    src = read_source(args.source, "train", classes=classes, images_per_class=args.images_per_class)
    base = {"files": [str(s.path) for s in src.samples], "labels": [s.label for s in src.samples],
            "classes": len(classes), "batch": args.batch, "steps": args.steps, "warmup": args.warmup}  # fmt: skip
    storage = (args.out / "ray").resolve()
    rows = []
    ensure_ray()
    for backend in args.backends.split(","):
        plain = measure({**base, "backend": backend, "threads": args.threads, "loader_threads": 1})
        one = run_ray(
            {**base, "backend": backend, "threads": args.threads, "loader_threads": 1}, 1, storage
        )
        two = run_ray(
            {**base, "backend": backend, "threads": max(1, args.threads // 2), "loader_threads": 1},
            2,
            storage,
        )
        rows.append((backend, plain, one, two))
    print(
        f"\npretrain throughput, alexnet-small 64x64, batch {args.batch}/worker, {args.steps} timed steps, {os.cpu_count()} cores"
    )
    print(
        f"{'loader':<10} {'plain img/s':>12} {'ray 1w img/s':>13} {'ray 2w img/s':>13} {'ray1/plain':>11} {'ray2/plain':>11}"
    )
    for backend, plain, one, two in rows:
        print(
            f"{backend:<10} {plain:>12.1f} {one:>13.1f} {two:>13.1f} {one / plain:>11.2f} {two / plain:>11.2f}"
        )
    if len(rows) == 2:
        (b0, p0, o0, t0), (b1, p1, o1, t1) = rows
        print(f"{b1}/{b0}: plain {p1 / p0:.2f}, ray 1w {o1 / o0:.2f}, ray 2w {t1 / t0:.2f}")


if __name__ == "__main__":
    main()
