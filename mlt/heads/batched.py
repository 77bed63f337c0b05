"""Many FCa/FCb heads trained in one vectorised pass over the same cached features.

Heads that see the same training rows in the same order (same ``seed``, ``batch_size``,
``background_fraction`` and ``resample_background``), have the same ``fca_width`` and the same
optimiser form one *group*. A group keeps its H heads' parameters stacked — FCa as one
(D, H·W) matrix, FCb as (H, W, C+1) — so each batch of features is read and converted once and
multiplied by every head in one GEMM (FCa) and one batched GEMM (FCb). Gradients are written
out by hand into buffers allocated once per group (fresh parameter-sized tensors every batch
would cost more than the arithmetic on a CPU). Each head has its own dropout rate, learning
rate, weight decay and momentum, applied by a hand-written vectorised, in-place SGD (or AdamW)
step that follows ``torch.optim`` update for update; each head stops on its own
(patience on validation mAP, its epoch count, or the callback) and keeps its best epoch's
weights. Stopped heads leave the stack, so the pass gets cheaper as heads finish.

Each head starts from exactly the weights ``Head(...)`` draws under ``torch.manual_seed(seed)``
and every group uses :func:`~mlt.heads.train.epoch_rows`, so with dropout 0 a head trained
here matches :func:`~mlt.heads.train.train_head` up to float rounding (summation order).
With dropout the masks come from the group's own generator: equally random, not the same draws.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mlt.config import HeadConfig
from mlt.evaluate import ap_table, image_scores
from mlt.heads.data import WindowData
from mlt.heads.model import Head
from mlt.heads.train import HeadResult, epoch_rows

#: Called after each epoch of each head with (config index, epoch, metrics); True stops that head.
BatchedEpochCallback = Callable[[int, int, dict], bool | None]

#: The HeadConfig fields that must agree for heads to share one pass.
GROUP_FIELDS = (
    "seed", "batch_size", "background_fraction", "resample_background", "fca_width", "optimizer",
)  # fmt: skip

_ADAM_BETAS, _ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.AdamW defaults, as build_head_optimizer
_HIDDEN_FLOATS = 1 << 21  # activations per scoring chunk (8 MB of float32)
_PROB_FLOATS = 1 << 21  # window probabilities held per block of whole images (8 MB)


def group_configs(configs: Sequence[HeadConfig]) -> list[list[int]]:
    """Returns the indices of ``configs`` grouped by :data:`GROUP_FIELDS`, in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for i, hc in enumerate(configs):
        groups.setdefault(tuple(getattr(hc, f) for f in GROUP_FIELDS), []).append(i)
    return list(groups.values())


@dataclass
class _Stack:
    """The parameters of H heads of one group (head axis: 1 of ``w1``, 0 of the others)."""

    w1: torch.Tensor  # (D, H, W): FCa weights, transposed
    b1: torch.Tensor  # (H, W)
    w2: torch.Tensor  # (H, W, C+1): FCb weights, transposed
    b2: torch.Tensor  # (H, C+1)

    AXES = (1, 0, 0, 0)

    def params(self) -> list[torch.Tensor]:
        return [self.w1, self.b1, self.w2, self.b2]

    @property
    def heads(self) -> int:
        return int(self.b1.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the logits (H, B, C+1) of every head for the rows ``x`` (B, D), no dropout."""
        d, h, w = self.w1.shape
        hidden = torch.addmm(self.b1.view(1, -1), x, self.w1.view(d, h * w)).relu_()
        return torch.baddbmm(
            self.b2.unsqueeze(1), hidden.view(len(x), h, w).transpose(0, 1), self.w2
        )

    def gradients(
        self, x: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None, grads: list[torch.Tensor]
    ) -> torch.Tensor:
        """Writes every head's mean cross-entropy gradient into ``grads``; returns the losses (H,).

        Written out by hand (what autograd would do) so that the parameter-sized gradients go
        into buffers allocated once, not into fresh tensors every batch. ``keep`` (B, H·W) is the
        dropout mask, already scaled by 1 / (1 - p).
        """
        d, h, w = self.w1.shape
        b = len(x)
        hidden = torch.addmm(self.b1.view(1, -1), x, self.w1.view(d, h * w)).relu_()
        if keep is not None:
            hidden.mul_(keep)
        per_head = hidden.view(b, h, w).transpose(0, 1)  # (H, B, W)
        logp = torch.log_softmax(torch.baddbmm(self.b2.unsqueeze(1), per_head, self.w2), dim=2)
        target = y.view(1, b, 1).expand(h, b, 1)
        losses = -logp.gather(2, target).squeeze(2).mean(dim=1)
        dlogits = logp.exp_().scatter_add_(2, target, torch.full((h, b, 1), -1.0)).div_(b)
        torch.bmm(per_head.transpose(1, 2), dlogits, out=grads[2])
        torch.sum(dlogits, dim=1, out=grads[3])
        dhidden = torch.bmm(dlogits, self.w2.transpose(1, 2)).transpose(0, 1).reshape(b, h * w)
        if keep is not None:
            dhidden.mul_(keep)
        dhidden.masked_fill_(hidden <= 0, 0.0)  # ReLU (and dropped units)
        torch.mm(x.T, dhidden, out=grads[0].view(d, h * w))
        torch.sum(dhidden, dim=0, out=grads[1].view(-1))
        return losses

    def head(self, i: int, hc: HeadConfig) -> Head:
        """Returns head ``i`` of the stack as an ordinary :class:`Head` module."""
        d, _, w = self.w1.shape
        model = Head(d, self.w2.shape[2] - 1, w, hc.dropout)
        with torch.no_grad():
            model.fca.weight.copy_(self.w1[:, i, :].T)
            model.fca.bias.copy_(self.b1[i])
            model.fcb.weight.copy_(self.w2[i].T)
            model.fcb.bias.copy_(self.b2[i])
        return model.eval()

    def snapshot(self, i: int) -> list[torch.Tensor]:
        """Returns copies of head ``i``'s parameters."""
        return [
            p.detach().select(a, i).clone() for p, a in zip(self.params(), self.AXES, strict=True)
        ]


def _initial_stack(configs: Sequence[HeadConfig], dim: int, num_classes: int) -> _Stack:
    """Returns the stacked initial weights: each head as ``Head`` draws them under its seed."""
    heads = []
    for hc in configs:
        torch.manual_seed(hc.seed)
        heads.append(Head(dim, num_classes, hc.fca_width, hc.dropout))
    with torch.no_grad():
        return _Stack(
            torch.stack([m.fca.weight.T for m in heads], dim=1).contiguous(),
            torch.stack([m.fca.bias for m in heads]).contiguous(),
            torch.stack([m.fcb.weight.T for m in heads]).contiguous(),
            torch.stack([m.fcb.bias for m in heads]).contiguous(),
        )


def _per_head(values: Sequence[float], param: torch.Tensor, axis: int) -> torch.Tensor:
    """Returns ``values`` (one per head) shaped to broadcast against ``param`` along ``axis``."""
    shape = [1] * param.dim()
    shape[axis] = len(values)
    return torch.tensor(values, dtype=param.dtype).view(shape)


class _Optimizer:
    """SGD with momentum or AdamW over stacked heads, one lr / weight decay / momentum per head.

    Follows ``torch.optim.SGD`` (dampening 0, no Nesterov) and ``torch.optim.AdamW`` (default
    betas and eps) update for update; hyper-parameters are per head, the step count is shared
    (every live head of a group steps on every batch).
    """

    def __init__(self, stack: _Stack, configs: Sequence[HeadConfig]) -> None:
        self.kind = configs[0].optimizer
        self.configs = list(configs)
        self.step_count = 0
        self.state = [[torch.zeros_like(p) for p in stack.params()] for _ in range(2)]
        self._coefficients(stack)

    def _coefficients(self, stack: _Stack) -> None:
        lr = [hc.lr for hc in self.configs]
        wd = [hc.weight_decay for hc in self.configs]
        self.lr, self.wd, self.momentum, self.decay = [], [], [], []
        for p, a in zip(stack.params(), stack.AXES, strict=True):
            self.lr.append(_per_head(lr, p, a))
            self.wd.append(_per_head(wd, p, a))
            self.momentum.append(_per_head([hc.momentum for hc in self.configs], p, a))
            # AdamW's decoupled decay factor, computed in double as torch does with floats.
            self.decay.append(_per_head([1 - x * y for x, y in zip(lr, wd, strict=True)], p, a))

    def keep(self, stack: _Stack, index: torch.Tensor, kept: Sequence[int]) -> None:
        """Drops the state of the heads not in ``index`` (the stack was already compacted)."""
        self.configs = [self.configs[i] for i in kept]
        self.state = [
            [s.index_select(a, index) for s, a in zip(states, stack.AXES, strict=True)]
            for states in self.state
        ]
        self._coefficients(stack)

    @torch.no_grad()
    def step(self, stack: _Stack, grads: list[torch.Tensor]) -> None:
        """Updates every head in place; ``grads`` are used as scratch space (overwritten)."""
        self.step_count += 1
        if self.kind == "adamw":
            b1, b2 = _ADAM_BETAS
            correction1 = 1 - b1**self.step_count
            correction2_sqrt = (1 - b2**self.step_count) ** 0.5
        for i, (p, g) in enumerate(zip(stack.params(), grads, strict=True)):
            if self.kind == "adamw":
                avg, avg_sq = self.state[0][i], self.state[1][i]
                p.mul_(self.decay[i])
                avg.lerp_(g, 1 - b1)
                avg_sq.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = torch.sqrt(avg_sq, out=g).div_(correction2_sqrt).add_(_ADAM_EPS)
                p.addcmul_(torch.div(avg, denom, out=g), self.lr[i], value=-1 / correction1)
            else:
                buf = self.state[0][i]
                buf.mul_(self.momentum[i]).add_(g.addcmul_(p, self.wd[i]))
                p.addcmul_(buf, self.lr[i], value=-1)


def _image_blocks(
    data: WindowData, rows_per_block: int
) -> list[tuple[np.ndarray | slice, int, int]]:
    """Returns blocks of whole images: (rows, first image, end image), images in index order."""
    index = np.asarray(data.image_index)
    counts = np.bincount(index, minlength=data.n_images)
    if (counts == 0).any():
        empty = np.flatnonzero(counts == 0)
        raise ValueError(
            f"{empty.size} image(s) have no windows, e.g. image index {empty[:5].tolist()}"
        )
    order = np.argsort(index, kind="stable")
    contiguous = bool(np.array_equal(order, np.arange(len(order))))
    ends = np.cumsum(counts)
    blocks, first = [], 0
    while first < data.n_images:
        start = 0 if first == 0 else int(ends[first - 1])
        end_img = int(np.searchsorted(ends, start + rows_per_block, side="right"))
        end_img = min(max(end_img, first + 1), data.n_images)
        stop = int(ends[end_img - 1])
        blocks.append((slice(start, stop) if contiguous else order[start:stop], first, end_img))
        first = end_img
    return blocks


@torch.no_grad()
def stack_image_scores(stack: _Stack, data: WindowData, k: float | str) -> np.ndarray:
    """Returns (H, N, C) image scores of every head (nan rows for a head with non-finite probs)."""
    h, w, c1 = stack.heads, stack.w1.shape[2], stack.w2.shape[2]
    c = data.num_classes
    scores = np.zeros((h, data.n_images, c))
    chunk = max(1, _HIDDEN_FLOATS // (h * w))
    bad = np.zeros(h, dtype=bool)
    for rows, first, end in _image_blocks(data, max(chunk, _PROB_FLOATS // (h * c1))):
        feats = data.features[rows]
        local = np.asarray(data.image_index[rows]) - first
        probs = np.empty((h, len(local), c), dtype=np.float32)
        for s in range(0, len(local), chunk):
            x = torch.from_numpy(np.ascontiguousarray(feats[s : s + chunk], dtype=np.float32))
            probs[:, s : s + len(x)] = torch.softmax(stack.forward(x), dim=2)[:, :, :c].numpy()
        for i in range(h):
            if bad[i] or not np.isfinite(probs[i]).all():
                bad[i] = True
                continue
            scores[i, first:end] = image_scores(probs[i], local, end - first, k)
    scores[bad] = np.nan
    return scores


def train_heads_batched(
    train: WindowData,
    val: WindowData | None,
    configs: Sequence[HeadConfig],
    classes: Sequence[str],
    val_gt: np.ndarray | None = None,
    k: float | str = 5.0,
    form: str = "voc07",
    callback: BatchedEpochCallback | None = None,
    progress: bool = False,
) -> list[HeadResult]:
    """Trains one head per config in vectorised passes; returns their results in config order.

    Each result is what :func:`~mlt.heads.train.train_head` returns for that config (a
    :class:`Head` with its best epoch's weights, per-epoch history, best epoch and val mAP),
    except that ``seconds`` and each epoch's ``epoch_seconds`` are the head's share of its
    pass's wall time. A head whose loss stops being finite is stopped with ``diverged`` in its
    last history entry and keeps its best weights so far (its initial weights if none).
    """
    from tqdm import tqdm

    if val is not None and val_gt is None:
        raise ValueError("val_gt is needed with val data (see ground_truth)")
    configs = list(configs)
    unfrozen = [hc.unfreeze for hc in configs if getattr(hc, "unfreeze", "none") != "none"]
    if unfrozen:
        raise ValueError(
            f"batched heads are FCa/FCb only: head.unfreeze must be 'none', got {unfrozen[0]!r}"
        )
    results: list[HeadResult | None] = [None] * len(configs)
    groups = group_configs(configs)
    total = sum(max(configs[i].epochs for i in g) for g in groups)
    with tqdm(total=total, desc=f"{len(configs)} heads", unit="epoch", disable=not progress) as bar:
        for group in groups:
            for i, result in zip(group, _train_group(train, val, [configs[i] for i in group], classes, val_gt, k,
                                                     form, callback, group, bar), strict=True):  # fmt: skip
                results[i] = result
    return results  # type: ignore[return-value]


def _train_group(
    train: WindowData, val: WindowData | None, configs: list[HeadConfig], classes: Sequence[str],
    val_gt: np.ndarray | None, k: float | str, form: str, callback: BatchedEpochCallback | None,
    ids: list[int], bar,
) -> list[HeadResult]:  # fmt: skip
    """Trains the heads of one group (same rows, width and optimiser) together."""
    start = time.perf_counter()
    first = configs[0]
    stack = _initial_stack(configs, train.dim, train.num_classes)
    initial = [stack.snapshot(i) for i in range(len(configs))]
    grads = [torch.empty_like(p) for p in stack.params()]
    opt = _Optimizer(stack, configs)
    results = [HeadResult(model=None) for _ in configs]  # type: ignore[arg-type]
    best: list[list[torch.Tensor] | None] = [None] * len(configs)
    since_best = [0] * len(configs)
    live = list(range(len(configs)))  # group positions of the heads still in the stack
    labels = torch.from_numpy(np.asarray(train.labels, dtype=np.int64))
    gen = torch.Generator().manual_seed(first.seed)
    max_epochs, epochs_run = max(hc.epochs for hc in configs), 0
    for epoch in range(1, max_epochs + 1):
        if not live:
            break
        epochs_run = epoch
        t0 = time.perf_counter()
        drop = torch.tensor([configs[j].dropout for j in live]).view(1, -1, 1)
        rows = epoch_rows(train, first, epoch)
        totals = np.zeros(len(live))
        for s in range(0, len(rows), first.batch_size):
            batch = np.sort(rows[s : s + first.batch_size])  # sorted: sequential memmap reads
            x = torch.from_numpy(np.asarray(train.features[batch], dtype=np.float32))
            keep = None
            if bool((drop > 0).any()):
                shape = (len(batch), len(live), stack.w1.shape[2])
                keep = (torch.rand(shape, generator=gen) >= drop).float().div_(1 - drop)
                keep = keep.view(len(batch), -1)
            losses = stack.gradients(x, labels[batch], keep, grads)
            opt.step(stack, grads)
            totals += losses.double().numpy() * len(batch)
        seen = len(rows)
        losses_epoch = totals / max(seen, 1)
        finite = np.isfinite(losses_epoch)
        val_maps = np.full(len(live), np.nan)
        if val is not None and finite.any():
            scorable = [n for n in range(len(live)) if finite[n]]
            sub = stack if len(scorable) == len(live) else _Stack(
                *(p.index_select(a, torch.tensor(scorable)) for p, a in zip(stack.params(), stack.AXES, strict=True))
            )  # fmt: skip
            scores = stack_image_scores(sub, val, k)
            for n, sc in zip(scorable, scores, strict=True):
                if np.isfinite(sc).all():
                    val_maps[n] = ap_table(sc, val_gt, list(classes), form).mean_ap
                else:
                    finite[n] = False
        share = (time.perf_counter() - t0) / len(live)
        stopped = []
        for n, j in enumerate(live):
            hc, result = configs[j], results[j]
            metrics = {"train_loss": float(losses_epoch[n]), "train_windows": seen}
            if not finite[n]:
                result.history.append(
                    {"epoch": epoch, **metrics, "epoch_seconds": share, "diverged": True}
                )
                result.stopped_early = True
                stopped.append(n)
                continue
            if val is not None:
                metrics["val_mAP"] = float(val_maps[n])
            metrics["epoch_seconds"] = share
            result.history.append({"epoch": epoch, **metrics})
            improved = val is None or best[j] is None or metrics["val_mAP"] > result.best_val_map
            if improved:
                best[j] = stack.snapshot(n)
                result.best_epoch, since_best[j] = epoch, 0
                result.best_val_map = metrics.get("val_mAP", float("nan"))
            else:
                since_best[j] += 1
            if callback is not None and callback(ids[j], epoch, metrics):
                result.stopped_early = epoch < hc.epochs
                stopped.append(n)
            elif val is not None and since_best[j] >= hc.patience:
                result.stopped_early = True
                stopped.append(n)
            elif epoch >= hc.epochs:
                stopped.append(n)
        bar.update(1)
        if stopped:
            kept = [n for n in range(len(live)) if n not in stopped]
            index = torch.tensor(kept, dtype=torch.long)
            stack = _Stack(
                *(p.index_select(a, index) for p, a in zip(stack.params(), stack.AXES, strict=True))
            )
            grads = [torch.empty_like(p) for p in stack.params()]
            opt.keep(stack, index, kept)
            live = [live[n] for n in kept]
    bar.update(max_epochs - epochs_run)
    seconds = (time.perf_counter() - start) / len(configs)
    for j, (hc, result) in enumerate(zip(configs, results, strict=True)):
        one = _Stack(
            *(s.unsqueeze(a) for s, a in zip(best[j] or initial[j], _Stack.AXES, strict=True))
        )
        result.model = one.head(0, hc)
        result.seconds = seconds
    return results
