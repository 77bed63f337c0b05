"""Plain torch training and evaluation epochs, the same with or without Ray Train.

Counts are summed across DDP ranks when a process group is initialised, so every rank
reports the same figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mlt.config import PretrainConfig


@dataclass
class EpochStats:
    """Loss and top-1/top-5 accuracy over one pass, with throughput."""

    loss: float
    top1: float
    top5: float
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        """Returns images per second over the pass (all ranks together)."""
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def as_metrics(self, prefix: str) -> dict[str, float]:
        """Returns the stats as ``{prefix_loss: ..., prefix_top1: ...}`` metrics."""
        d = asdict(self)
        d["images_per_s"] = self.images_per_s
        return {f"{prefix}_{k}": float(v) for k, v in d.items()}


def topk_correct(
    logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> list[int]:
    """Returns, for each k, how many labels are among the k highest logits."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top.eq(labels.unsqueeze(1))
    return [int(hits[:, : min(k, kmax)].any(dim=1).sum()) for k in ks]


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _run(model: nn.Module, batches: Iterable, device: torch.device, optimizer=None, scaler=None,
         amp: bool = False, channels_last: bool = False) -> EpochStats:  # fmt: skip
    train = optimizer is not None
    model.train(train)
    loss_sum = correct1 = correct5 = count = 0.0
    start = time.perf_counter()
    for images, labels in batches:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.set_grad_enabled(train), torch.autocast(device.type, enabled=amp):
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
        if train:
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
        n = labels.shape[0]
        c1, c5 = topk_correct(logits.detach().float(), labels)
        loss_sum += float(loss.detach()) * n
        correct1 += c1
        correct5 += c5
        count += n
    seconds = time.perf_counter() - start
    loss_sum, correct1, correct5, count, seconds = _all_reduce(
        [loss_sum, correct1, correct5, count, seconds], device
    )
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    count = max(count, 1.0)
    return EpochStats(
        loss_sum / count, correct1 / count, correct5 / count, int(count), seconds / world
    )


def train_one_epoch(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, device: torch.device,
                    scaler: torch.amp.GradScaler | None = None, amp: bool = False, channels_last: bool = False) -> EpochStats:  # fmt: skip
    """Returns the stats of one training pass over ``batches`` (updates the model)."""
    return _run(model, batches, device, optimizer, scaler, amp, channels_last)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable,
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
) -> EpochStats:
    """Returns loss and top-1/top-5 accuracy of ``model`` over ``batches`` (no update)."""
    return _run(model, batches, device, None, None, amp, channels_last)


def build_optimizer(model: nn.Module, cfg: PretrainConfig) -> torch.optim.SGD:
    """Returns SGD with momentum; weight decay on weights only (not biases)."""
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: PretrainConfig):
    """Returns the LR schedule: the paper's ÷10 on a training-loss plateau (at most
    ``lr_drops`` times), or cosine annealing over the epochs."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.1, patience=cfg.plateau_patience, threshold=1e-3,
        min_lr=cfg.lr * 0.1**cfg.lr_drops,
    )  # fmt: skip


def extend_cosine(scheduler, optimizer: torch.optim.Optimizer, epochs: int) -> bool:
    """Stretches a resumed cosine schedule to ``epochs`` (a run continued with more epochs);
    returns True when it changed anything.

    The learning rate is set to the closed form at the epoch reached, so the following steps
    are those of a cosine schedule over ``epochs`` from the start.
    """
    if not isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        return False
    if scheduler.T_max == epochs:
        return False
    scheduler.T_max = epochs
    t = min(scheduler.last_epoch, epochs)
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        eta_min = scheduler.eta_min
        group["lr"] = eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / epochs)) / 2
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    return True


def step_scheduler(scheduler, train_loss: float) -> None:
    """Advances the schedule by one epoch (plateau schedules watch the training loss)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(train_loss)
    else:
        scheduler.step()


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """Returns the learning rate of the first parameter group."""
    return float(optimizer.param_groups[0]["lr"])
