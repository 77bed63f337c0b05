"""Experiment 1: transfer (a trunk pretrained on the source set) vs no pretraining.

A scratch arm's trunk is trained on labelled windows of the target's own train images
(:mod:`mlt.experiments.scratch`); both trunks are then frozen and get the same heads. The spec's
``options.pairs`` lists (pretrained arm, scratch arm) pairs, e.g. one on the whole train split
and one on its first N images (``head.train_images``: the small-target regime, where the scratch
trunk too sees only those images); each pair gets its verdict.
"""

from __future__ import annotations

import time
from pathlib import Path

from mlt.experiments.compare import (
    Context,
    class_plot,
    class_table,
    map_table,
    pending,
    run_arms,
    target_classes,
    verdict,
)
from mlt.experiments.report import Section, duration, pct, table
from mlt.experiments.runner import ArmResult

PAPER = {"pretrained": 78.7, "scratch": 70.9}


def pairs(ctx: Context) -> list[tuple[str, str]]:
    """Returns the spec's (pretrained arm, scratch arm) pairs (default: pretrained vs scratch)."""
    from mlt.errors import InputError

    raw = ctx.spec.options.get("pairs", [["pretrained", "scratch"]])
    out = []
    for pair in raw:
        if not isinstance(pair, list) or len(pair) != 2 or not set(pair) <= set(ctx.spec.arms):
            raise InputError(ctx.spec.path, "options.pairs", pair,
                             f"[pretrained arm, scratch arm], both among {sorted(ctx.spec.arms)}")  # fmt: skip
        out.append((pair[0], pair[1]))
    return out


def _finding(pre: str, scratch: str, results: dict[str, ArmResult]) -> str:
    """Returns the verdict line of one pair (its images: the scratch arm's head.train_images)."""
    n = results[scratch].config.head.train_images
    diff, se, word = verdict(results[pre].stats("test_mAP"), results[scratch].stats("test_mAP"),
                             PAPER["pretrained"] - PAPER["scratch"])  # fmt: skip
    images = f"the first {n} train images" if n else "every train image"
    return f"- {pre} − {scratch} ({images}): **{diff:+.1f} ± {se:.1f}** test mAP points: {word}."


def run(ctx: Context) -> Section:
    """Runs every arm (building the scratch arms' window sets first); returns the section."""
    from mlt.experiments.scratch import build_window_source, recipe, source_folder

    start = time.perf_counter()
    opts, arm_pairs = ctx.spec.options, pairs(ctx)
    caps = int(opts.get("per_class", 3500)), int(opts.get("val_per_class", 500))
    for scratch in dict.fromkeys(s for _, s in arm_pairs):
        cfg = ctx.config(scratch)
        if not ctx.existing and (not ctx.arms or scratch in ctx.arms):
            folder = build_window_source(cfg, Path(cfg.data.source), *caps, ctx.progress)
            ctx.echo(f"[{scratch}] window source set: {folder}")
        else:
            folder = source_folder(Path(cfg.data.source), recipe(cfg, *caps))
        if folder != Path(cfg.data.source):
            ctx.arm_overrides[scratch] = (f"data.source={folder}",)
    results = run_arms(ctx)
    done = [(p, s) for p, s in arm_pairs if p in results and s in results]
    if not done:
        return pending(ctx, sorted(set(ctx.spec.arms) - set(results)))
    classes = target_classes(results[done[0][0]])
    plot = class_plot(ctx.out / "transfer-classes.png", results, classes,
                      "Transfer vs no pretraining: test AP per class")  # fmt: skip
    trunks = []
    for arm, r in results.items():
        t = r.trunk_info
        trunks.append([arm, r.config.data.source, t.get("classes"), r.config.pretrain.epochs,
                       pct([t.get("val_top1", float("nan"))]), duration(t.get("seconds", float("nan"))), f"`{r.trunk}`"])  # fmt: skip
    heads = [[arm, r.config.head.train_images or "all"] for arm, r in results.items()]
    missing = sorted(set(ctx.spec.arms) - set(results))
    body = f"""
Trunks (alexnet-small, the same recipe; val top-1 is on each trunk's own source val set):

{table(["arm", "trained on", "classes", "epochs", "val top-1", "pretraining time", "MLflow run"], trunks)}

Heads on the frozen trunks' conv-mode fc7 ({len(ctx.spec.seeds)} seeds; mean ± std over seeds),
each learning from these TinyVOC train images (val and test are always the whole splits):

{table(["arm", "train images"], heads)}

{map_table(results)}

Per class (test AP, VOC07):

{class_table(results, classes)}

![per-class AP](./{plot.name})

**Finding** (paper, VOC 2012: PRE-1000C − NO PRETRAIN = {PAPER["pretrained"]} − {PAPER["scratch"]} =
{PAPER["pretrained"] - PAPER["scratch"]:+.1f}):

{chr(10).join(_finding(p, s, results) for p, s in done)}

The ± is head-seed noise only: each arm has one pretraining run.
{f"Not measured yet: {', '.join(missing)}." if missing else ""}
"""
    return ctx.section(body, start, results)
