"""Experiment 1: transfer (a trunk pretrained on the source set) vs no pretraining.

The scratch arm's trunk is trained on labelled windows of the target's own train images
(:mod:`mlt.experiments.scratch`); both trunks are then frozen and get the same heads.
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
from mlt.experiments.runner import trunk_figures

PAPER = {"pretrained": 78.7, "scratch": 70.9}


def run(ctx: Context) -> Section:
    """Runs both arms (building the scratch arm's window set first); returns the section."""
    from mlt.experiments.scratch import build_window_source

    start = time.perf_counter()
    opts = ctx.spec.options
    scratch = opts.get("scratch_arm", "scratch")
    cfg = ctx.config(scratch)
    if not ctx.existing and (not ctx.arms or scratch in ctx.arms):
        ctx.echo(f"[{scratch}] window source set: {cfg.data.source}")
        build_window_source(cfg, Path(cfg.data.source), int(opts.get("per_class", 3500)),
                            int(opts.get("val_per_class", 500)), ctx.progress)  # fmt: skip
    results = run_arms(ctx)
    if scratch not in results or len(results) < 2:
        return pending(ctx, sorted(set(ctx.spec.arms) - set(results)))
    pre = next(a for a in results if a != scratch)
    classes = target_classes(results[pre])
    plot = class_plot(ctx.out / "transfer-classes.png", results, classes,
                      "Transfer vs no pretraining: test AP per class")  # fmt: skip
    diff, se, word = verdict(results[pre].values("test_mAP"), results[scratch].values("test_mAP"),
                             PAPER["pretrained"] - PAPER["scratch"])  # fmt: skip
    trunks = []
    for arm, r in results.items():
        t = trunk_figures(r.trunk)
        trunks.append([arm, r.config.data.source, t.get("classes"), r.config.pretrain.epochs,
                       pct([t.get("val_top1", float("nan"))]), duration(t["seconds"]), f"`{r.trunk}`"])  # fmt: skip
    body = f"""
Trunks (alexnet-small, the same recipe; val top-1 is on each trunk's own source val set):

{table(["arm", "trained on", "classes", "epochs", "val top-1", "pretraining time", "MLflow run"], trunks)}

Heads on the frozen trunks' conv-mode fc7 ({len(ctx.spec.seeds)} seeds; mean ± std over seeds):

{map_table(results)}

Per class (test AP, VOC07):

{class_table(results, classes)}

![per-class AP](./{plot.name})

**Finding.** Pretrained − scratch = **{diff:+.1f} ± {se:.1f}** mAP points on TinyVOC test (paper, VOC 2012:
{PAPER["pretrained"]} − {PAPER["scratch"]} = {PAPER["pretrained"] - PAPER["scratch"]:+.1f}): {word}.
The ± is head-seed noise only: each arm has one pretraining run.
"""
    return ctx.section(body, start, results)
