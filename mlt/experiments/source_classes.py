"""Experiment 2: which source classes make the better trunk (all vs random vs related vs unrelated).

Arms differ only in ``data.subset``; every class keeps the same number of images. Besides the
mAP table: the per-class test AP gains of the related arm over the random and unrelated arms.
"""

from __future__ import annotations

import time

import numpy as np

from mlt.experiments.compare import (
    Context,
    class_plot,
    class_stats,
    class_table,
    map_table,
    pending,
    run_arms,
    target_classes,
    verdict,
)  # fmt: skip
from mlt.experiments.report import Section, bar_plot, duration, pct, table


def run(ctx: Context) -> Section:
    """Runs every arm; returns the section with mAP, per-class tables, gains and the verdicts."""
    start = time.perf_counter()
    results = run_arms(ctx)
    if len(results) < 2:
        return pending(ctx, sorted(set(ctx.spec.arms) - set(results)))
    first = next(iter(results.values()))
    classes = target_classes(first)
    trunks = []
    for arm, r in results.items():
        t = r.trunk_info
        sub = r.config.data.subset
        trunks.append([arm, sub.kind, t.get("classes"), pct([t.get("val_top1", float("nan"))]),
                       duration(t.get("seconds", float("nan"))), f"`{r.trunk}`"])  # fmt: skip
    plot = class_plot(ctx.out / "source-classes.png", results, classes,
                      "Source classes: test AP per class")  # fmt: skip
    parts = [
        f"""
Trunks (alexnet-small, configs/cpu.yaml's recipe; every class has the same 300 images; val
top-1 on each trunk's own classes, so not comparable across arms):

{table(["arm", "subset", "classes", "val top-1", "pretraining time", "MLflow run"], trunks)}

Heads on each frozen trunk's conv-mode fc7 ({len(ctx.spec.seeds)} seeds, mean ± std):

{map_table(results)}

Per class (test AP, VOC07):

{class_table(results, classes)}

![per-class AP](./{plot.name})
"""
    ]
    findings = []
    # Each pair (a, b): the paper found a > b (related added > random > unrelated; all > half).
    pairs = [("related100", "random100"), ("related100", "unrelated100"),
             ("all200", "random100"), ("random100", "unrelated100")]  # fmt: skip
    for a, b in pairs:
        if a in results and b in results:
            d, se, word = verdict(results[a].stats("test_mAP"), results[b].stats("test_mAP"), +1)
            findings.append(f"- {a} − {b}: **{d:+.1f} ± {se:.1f}** test mAP points — {word}.")
    gains = {}
    for other in ("random100", "unrelated100"):
        if "related100" in results and other in results:
            rel = class_stats(results["related100"], classes)
            oth = class_stats(results[other], classes)
            gains[f"related − {other}"] = np.array(
                [r.mean - o.mean for r, o in zip(rel, oth, strict=True)]
            )
    if gains:
        rows = [[c, *(f"{100 * g[i]:+.1f}" for g in gains.values())] for i, c in enumerate(classes)]
        gplot = bar_plot(ctx.out / "source-classes-gains.png", classes,
                         dict(gains), "AP gain (points)",
                         "Per-class test AP gain of related pretraining")  # fmt: skip
        parts.append(f"""
Per-class gains of related pretraining (test AP points, mean over seeds):

{table(["class", *gains], rows)}

![per-class gains](./{gplot.name})
""")
    parts.append(
        "**Findings** (paper: PRE-1000R 76.3 < PRE-1000C 78.7 on VOC 2012, and PRE-1512 — the "
        "related classes added — gains most on the classes it adds, e.g. the dog breeds):\n\n"
        + "\n".join(findings)
        + "\n\nThe ± is head-seed noise only: one pretraining run per arm, so a gap smaller than "
        "the spread between pretraining seeds (not measured here) is not established."
    )
    return ctx.section("\n".join(parts), start, results)
