"""Experiment 5: frozen FC6/FC7 vs FC6 retrained (the paper's PRE-1512 vs PRE-1512U).

The boxed protocol (given an object's box, name its class; the paper's action-classification
setting): the frozen arm trains FCa/FCb on fc7, the fc6 arm also retrains FC6 from cached c5.
"""

from __future__ import annotations

import time

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
from mlt.experiments.report import Section

PAPER = {"frozen": 68.4, "fc6": 70.2}


def run(ctx: Context) -> Section:
    """Runs both arms on the boxed feature set; returns the section."""
    start = time.perf_counter()
    results = run_arms(ctx)
    if len(results) < 2:
        return pending(ctx, sorted(set(ctx.spec.arms) - set(results)))
    names = list(results)
    classes = target_classes(results[names[0]])
    plot = class_plot(ctx.out / "unfrozen-classes.png", results, classes,
                      "Boxed protocol: frozen vs retrained FC6, test AP per class")  # fmt: skip
    d, se, word = verdict(results[names[1]].stats("test_mAP"), results[names[0]].stats("test_mAP"),
                          PAPER["fc6"] - PAPER["frozen"])  # fmt: skip
    body = f"""
Boxed protocol: one square window per object box (mirror-padded past the image), the head names
its class. Frozen: FCa/FCb on fc7. fc6: FC6 retrained too, from cached c5 (FC7 frozen, as in the
paper). {len(ctx.spec.seeds)} seeds, mean ± std:

{map_table(results)}

{class_table(results, classes)}

![per-class AP](./{plot.name})

**Finding.** {names[1]} − {names[0]}: **{d:+.1f} ± {se:.1f}** test mAP points (paper, VOC 2012 action:
PRE-1512U {PAPER["fc6"]} − PRE-1512 {PAPER["frozen"]} = {PAPER["fc6"] - PAPER["frozen"]:+.1f}): {word}.
"""
    return ctx.section(body, start, results)
