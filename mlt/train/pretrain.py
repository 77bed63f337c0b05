"""Trunk pretraining on a source set under Ray Train (V2): DDP workers, checkpoints, MLflow.

The driver (``run_pretrain``) reads the source set and its class subset, opens an MLflow run,
and starts a ``TorchTrainer`` whose workers run ``train_worker``: gloo on CPU, NCCL on GPU,
per-rank seeds, one ``ray.train.report`` with a checkpoint per epoch. A killed worker is
restarted from the last checkpoint (``FailureConfig``); starting the same run again (same
name and run folder) continues from its last checkpoint and says so. At the end the driver
logs the trunk as an MLflow model and registers it as ``trunk-<config name>``.

Ray is imported inside the functions, so importing this module does not need it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mlt.checkpoint import state_dict_digest, unwrap_model
from mlt.config import RunConfig
from mlt.data.labelmap import load_label_map
from mlt.data.source import SourceSet, read_source
from mlt.data.subsets import select_classes, subset_digest
from mlt.errors import InputError

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
#: Reliability tests set this to "<rank>:<epoch>:<marker file>" to SIGKILL a worker once.
FAULT_ENV = "MLT_FAULT_KILL_WORKER"


@dataclass
class SourceData:
    """The pretraining inputs: train/val file lists with labels over the chosen classes."""

    classes: list[str]
    train: SourceSet
    val: SourceSet
    digest: str

    def as_lists(self) -> dict[str, Any]:
        """Returns plain lists (paths as str) to ship to Ray workers."""
        return {
            "classes": self.classes,
            "train_files": [str(s.path) for s in self.train.samples],
            "train_labels": [s.label for s in self.train.samples],
            "val_files": [str(s.path) for s in self.val.samples],
            "val_labels": [s.label for s in self.val.samples],
        }


def prepare_source(config: RunConfig) -> SourceData:
    """Returns the source set's train and val splits restricted to the configured class subset."""
    data = config.data
    root = Path(data.source).resolve()  # workers run in other folders: ship absolute paths
    all_wnids = read_source(root, "train", images_per_class=1).classes
    sub = data.subset
    label_map = (
        load_label_map(data.label_map, all_wnids) if sub.kind in ("related", "unrelated") else None
    )
    classes = select_classes(
        all_wnids, sub.kind, n=sub.n, seed=sub.seed, label_map=label_map, classes=sub.classes or None,
        exclude=sub.exclude,
    )  # fmt: skip
    train = read_source(root, "train", classes=classes, images_per_class=sub.images_per_class)
    val = read_source(root, "val", classes=classes)
    digest = hashlib.sha256(
        json.dumps({"classes": classes, "train": [p.path.name for p in train.samples]}).encode()
    ).hexdigest()[:16]
    return SourceData(classes, train, val, digest)


def train_worker(payload: dict) -> None:
    """Ray Train worker function: trains the trunk, reporting metrics and a checkpoint each epoch."""
    import ray.train
    import ray.train.torch

    from mlt.decode import make_train_loader
    from mlt.models import create_model
    from mlt.train.loop import (
        build_optimizer,
        build_scheduler,
        current_lr,
        evaluate,
        extend_cosine,
        step_scheduler,
        train_one_epoch,
    )

    config = RunConfig.model_validate(payload["config"])
    cfg = config.pretrain
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed * 1000 + rank)
    torch.set_num_threads(max(1, payload.get("threads_per_worker", 1)))
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"

    model = create_model(cfg.model, num_classes=len(payload["classes"]))
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
        if extend_cosine(scheduler, optimizer, cfg.epochs) and rank == 0:
            print(f"cosine schedule stretched to {cfg.epochs} epochs", flush=True)
        if rank == 0:
            print(f"resumed from epoch {start_epoch}", flush=True)
    if on_gpu:
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    spec = unwrap_model(model)
    scaler = torch.amp.GradScaler("cuda") if on_gpu else None

    files, labels = payload["train_files"], payload["train_labels"]
    if cfg.max_train_images:
        files, labels = files[: cfg.max_train_images], labels[: cfg.max_train_images]
    common = dict(
        backend=cfg.loader, input_size=cfg.input_size, mean=spec.mean, std=spec.std, shard_id=rank,
        num_shards=world, seed=cfg.seed, device="gpu" if on_gpu else "cpu", num_threads=cfg.loader_workers,
    )  # fmt: skip
    train_loader = make_train_loader(
        files, labels, batch_size=cfg.batch_size, training=True, drop_last=True, **common
    )
    val_loader = make_train_loader(
        payload["val_files"],
        payload["val_labels"],
        batch_size=cfg.batch_size,
        training=False,
        drop_last=False,
        **common,
    )

    mlflow_run = _worker_mlflow(payload) if rank == 0 else None
    try:
        for epoch in range(start_epoch, cfg.epochs):
            _maybe_inject_fault(payload.get("fault"), epoch, rank)
            train_loader.set_epoch(epoch)
            tr = train_one_epoch(
                model, train_loader, optimizer, device, scaler, amp=on_gpu, channels_last=on_gpu
            )
            va = evaluate(model, val_loader, device, amp=on_gpu, channels_last=on_gpu)
            lr = current_lr(optimizer)
            step_scheduler(scheduler, tr.loss)
            spread = _weight_spread(model, device)
            metrics = {**tr.as_metrics("train"), **va.as_metrics("val"), "lr": lr, "epoch": epoch,
                       "resumed_from_epoch": start_epoch, "rank_weight_spread": spread}  # fmt: skip
            if rank == 0:
                print(
                    f"epoch {epoch + 1}/{cfg.epochs}: train loss {tr.loss:.3f} top-1 {tr.top1:.3f} "
                    f"({tr.images_per_s:.0f} img/s), val loss {va.loss:.3f} top-1 {va.top1:.3f} "
                    f"top-5 {va.top5:.3f}, lr {lr:.4g}",
                    flush=True,
                )
            if mlflow_run is not None:
                mlflow_run.log_metrics(
                    {k: v for k, v in metrics.items() if k != "epoch"}, step=epoch
                )
            with tempfile.TemporaryDirectory() as tmp:
                ckpt = None
                if rank == 0:
                    state = {"model": unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "epoch": epoch, "classes": payload["classes"],
                             "model_name": cfg.model}  # fmt: skip
                    torch.save(state, Path(tmp) / CHECKPOINT_FILE)
                    ckpt = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(metrics, checkpoint=ckpt)
    finally:
        train_loader.close()
        val_loader.close()


def _weight_spread(model: torch.nn.Module, device: torch.device) -> float:
    """Returns max - min over ranks of a weight checksum: 0 when DDP kept every rank identical."""
    import torch.distributed as dist

    total = (
        torch.stack([p.detach().double().sum() for p in model.parameters()])
        .sum()
        .reshape(1)
        .to(device)
    )
    if not (dist.is_available() and dist.is_initialized()):
        return 0.0
    gathered = [torch.zeros_like(total) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, total)
    values = torch.cat(gathered)
    return float(values.max() - values.min())


def _maybe_inject_fault(fault: str | None, epoch: int, rank: int) -> None:
    """Fault injection for reliability tests: ``"<rank>:<epoch>:<marker file>"`` SIGKILLs that
    rank at the start of that epoch, once (the marker file records that it happened)."""
    if not fault:
        return
    import signal
    import time

    r, e, marker = fault.split(":", 2)
    if int(r) == rank and int(e) == epoch and not Path(marker).exists():
        # A real fault strikes mid-epoch, after Ray Train's controller has taken in the last
        # report; dying within milliseconds of ray.train.report races that hand-over.
        time.sleep(5)
        Path(marker).write_text(f"killed rank {rank} at epoch {epoch}\n")
        os.kill(os.getpid(), signal.SIGKILL)


class _WorkerRun:
    """Rank 0's handle on the driver's MLflow run: logs metrics with retries, never silently drops."""

    def __init__(self, uri: str, run_id: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(uri)
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for attempt in range(5):
            try:
                self.client.log_batch(self.run_id, metrics=batch)
                return
            except Exception:  # a tracking server blip: retry, then fail the epoch loudly
                if attempt == 4:
                    raise
                time.sleep(2**attempt)


def _worker_mlflow(payload: dict) -> _WorkerRun | None:
    if not payload.get("mlflow_run_id"):
        return None
    return _WorkerRun(payload["tracking_uri"], payload["mlflow_run_id"])


def ray_run_name(config: RunConfig) -> str:
    """Returns the Ray Train run name of this config's pretraining (its resume key)."""
    return f"{config.name}-pretrain"


def run_pretrain(
    config: RunConfig, resume: str = "auto", register: bool = True, progress: bool = True
) -> dict:
    """Pretrains the trunk under Ray Train; returns a summary (final metrics, paths, MLflow ids).

    ``resume="auto"`` continues the same run (same name, same run folder) from its last
    checkpoint; ``"never"`` removes the earlier run's Ray state first.
    """
    import mlflow
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from mlt import tracking
    from mlt.models import create_model
    from mlt.raysession import ensure_ray

    cfg = config.pretrain
    source = prepare_source(config)
    storage = (Path(config.run_dir) / "ray").resolve()
    name = ray_run_name(config)
    if resume == "never" and (storage / name).exists():
        log.warning("removing the earlier run's state at %s (--resume never)", storage / name)
        shutil.rmtree(storage / name)
    resuming = (storage / name).exists()
    _check_resume_inputs(config, storage / name, resuming)

    ensure_ray()
    tracking.setup_tracking(config)
    run_id = _find_resumable_run(name) if resuming else None
    with tracking.run(config, name, "pretrain", run_id=run_id) as active:
        if run_id is None:
            tracking.log_config(config, sections=("data", "pretrain"))
            tracking.set_tags({"mlt.subset.kind": config.data.subset.kind, "mlt.subset.digest": subset_digest(source.classes),
                               "mlt.subset.size": len(source.classes), "mlt.ray_run": name})  # fmt: skip
            tracking.log_dataset("source-train", source.digest, config.data.source, "training")
            tracking.log_dataset(
                "source-val", subset_digest(source.classes), config.data.source, "validation"
            )
            mlflow.log_dict({"classes": source.classes}, "classes.json")
        payload = {"config": config.model_dump(mode="json"), **source.as_lists(),
                   "tracking_uri": mlflow.get_tracking_uri(), "mlflow_run_id": active.info.run_id,
                   "threads_per_worker": max(1, int(ray.cluster_resources().get("CPU", 1)) // cfg.workers), "fault": os.environ.get(FAULT_ENV)}  # fmt: skip
        trainer = TorchTrainer(
            train_worker,
            train_loop_config=payload,
            torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
            scaling_config=ray.train.ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu),
            run_config=ray.train.RunConfig(
                name=name, storage_path=str(storage),
                failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            ),
        )  # fmt: skip
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"pretraining {name} finished without a checkpoint")
        with result.checkpoint.as_directory() as d:
            state = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        model = create_model(cfg.model, num_classes=len(source.classes))
        model.load_state_dict(state["model"])
        digest = state_dict_digest(model)
        tracking.set_tags({"mlt.trunk.digest": digest, "mlt.trunk.model": cfg.model})
        model_uri = None
        if register:
            info = mlflow.pytorch.log_model(
                model, name="trunk", serialization_format="pickle",
                registered_model_name=f"trunk-{config.name}",
            )  # fmt: skip
            model_uri = info.model_uri
            version = getattr(info, "registered_model_version", None)
            if version is not None:
                client = mlflow.MlflowClient()
                for key, value in {"subset.kind": config.data.subset.kind, "subset.digest": subset_digest(source.classes),
                                   "subset.size": len(source.classes), "trunk.digest": digest}.items():  # fmt: skip
                    client.set_model_version_tag(
                        f"trunk-{config.name}", str(version), key, str(value)
                    )
        metrics = dict(result.metrics or {})
        return {"run_id": active.info.run_id, "model_uri": model_uri, "trunk_digest": digest, "metrics": metrics,
                "checkpoint": result.checkpoint.path, "classes": len(source.classes), "epochs": int(state["epoch"]) + 1}  # fmt: skip


#: In a Ray run folder: the digest of the inputs it trains (``pretrain.epochs`` left out).
INPUTS_FILE = "mlt-inputs.txt"


def resume_key(config: RunConfig) -> str:
    """Returns what a pretraining run folder must hold to be continued: the pretraining
    digest with ``pretrain.epochs`` left out (more epochs continue the same run)."""
    from mlt.pipeline import pretrain_digest

    fixed = config.pretrain.model_copy(update={"epochs": 1})
    return pretrain_digest(config.model_copy(update={"pretrain": fixed}))


def _check_resume_inputs(config: RunConfig, folder: Path, resuming: bool) -> None:
    """Refuses to continue a run folder that trained other inputs; records them in a new one.

    A folder without the record (made before it existed) is continued as it is.
    """
    key, marker = resume_key(config), folder / INPUTS_FILE
    if resuming and marker.is_file() and marker.read_text().strip() != key:
        raise InputError(
            folder, "name", config.name,
            "a config name whose earlier pretraining had the same source, subset and settings"
            " (this run folder trained other inputs); give another name or --resume never",
            kind="resume mismatch",
        )  # fmt: skip
    if not marker.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(key + "\n")


def _find_resumable_run(ray_name: str) -> str | None:
    """Returns the id of the latest unfinished MLflow pretrain run of ``ray_name``, if any."""
    import mlflow

    runs = mlflow.search_runs(
        filter_string=f"tags.`mlt.ray_run` = '{ray_name}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list",
    )  # fmt: skip
    return runs[0].info.run_id if runs else None
