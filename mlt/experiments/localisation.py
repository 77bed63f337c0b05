"""Experiment 6: localisation — pointing accuracy per class and example score maps.

Pointing: for each test image and present class, is the peak of the class's score map (window
scores spread over their pixels) inside a box of that class? Figures: score-map overlays of the
first ``options.figures`` test images by the seed-0 head, one PNG per present class.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mlt.experiments.compare import (
    Context,
    class_plot,
    class_stats,
    pending,
    run_arms,
    target_classes,
)
from mlt.experiments.report import Section, pct, table


def run(ctx: Context) -> Section:
    """Runs the arm(s); returns the section with per-class pointing and example maps."""
    from mlt.data.voc import VocDataset
    from mlt.evaluate import pointing_chance
    from mlt.heads.evaluation import run_evaluate

    start = time.perf_counter()
    results = run_arms(ctx)
    if not results:
        return pending(ctx, list(ctx.spec.arms))
    arm, r = next(iter(results.items()))
    classes = target_classes(r)
    ds = VocDataset(Path(r.config.data.target), limit=r.config.data.target_limit)
    chance = pointing_chance(ds.iter_annotations(r.config.data.test_split), classes)
    rows = [[c, *(pct(class_stats(x, [c], "test_pointing_")[0]) for x in results.values()),
             pct([chance[i]])] for i, c in enumerate(classes)]  # fmt: skip
    rows.append(["**mean**", *(pct(x.stats("test_pointing_mean")) for x in results.values()),
                 pct([np.nanmean(chance)])])  # fmt: skip
    plot = class_plot(ctx.out / "localisation-pointing.png", results, classes,
                      "Pointing accuracy per class (test)", prefix="test_pointing_",
                      ylabel="pointing accuracy (%)")  # fmt: skip
    maps = ctx.out / "maps"
    if r.source:  # taken from the record: its head is not here to draw, the maps drawn stay
        overlays = sorted(str(p) for p in maps.glob("*.png"))
    else:
        for old in maps.glob("*.png") if maps.is_dir() else []:
            old.unlink()
        overlays = run_evaluate(r.config, r.heads[0].run_id, "test", overlay_dir=maps,
                                n_overlays=int(ctx.spec.options.get("figures", 3)), log=False)["overlays"]  # fmt: skip
    figures = "\n".join(f"![{p.split('/')[-1]}](./maps/{p.split('/')[-1]})" for p in overlays)
    body = f"""
Pointing accuracy on TinyVOC test ({arm} grid, {r.seeds} seeds, mean ± std), the fraction
of (image, present class) pairs whose score-map peak falls inside a box of that class; chance =
the same for a peak at a uniformly random pixel (the share of the image the class's boxes cover):

{table(["class", *results, "chance"], rows)}

![pointing per class](./{plot.name})

Score maps of the first test images (seed-0 head; the class's boxes drawn; brighter = higher
score):

{figures}

The paper shows such maps only as pictures (each pixel averages the scores of the windows
covering it, as here); pointing accuracy puts a number on what they show.
"""
    return ctx.section(body, start, results)
