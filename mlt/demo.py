"""``make demo``: the whole pipeline on the embedded defaults, on real data when it is there.

The data comes from the config's paths when they exist, else from ``$MLT_DATA`` (a folder laid
out like ``../shared/data``), else a small synthetic source set and VOC-format target set are
generated in the run folder. The summary says which was used and where everything went.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlt.config import RunConfig

DATA_ENV = "MLT_DATA"


def resolve_data(config: RunConfig) -> tuple[RunConfig, str]:
    """Returns the config pointed at the data to use, and a line saying which data that is."""
    data = config.data
    if Path(data.source).is_dir() and Path(data.target).is_dir():
        return config, f"shared data: {data.source} → {data.target}"
    env = os.environ.get(DATA_ENV)
    if env:
        root = Path(env)
        source, target = root / "tiny-imagenet-200", root / "tinyvoc" / "TinyVOC"
        if source.is_dir() and target.is_dir():
            cfg = config.model_copy(deep=True)
            cfg.data.source, cfg.data.target = source, target
            return cfg, f"${DATA_ENV} data: {source} → {target}"
    from mlt.data.synthetic import make_demo_data

    paths = make_demo_data(Path(config.run_dir) / "synthetic", seed=config.seed)
    cfg = config.model_copy(deep=True)
    cfg.data.source, cfg.data.target = Path(paths["source"]), Path(paths["target"])
    cfg.data.label_map = Path(paths["labelmap"])
    cfg.data.subset.kind, cfg.data.subset.n, cfg.data.subset.images_per_class = "all", None, None
    cfg.data.target_limit = None
    return (
        cfg,
        f"synthetic data (no {config.data.source} and no ${DATA_ENV}): {paths['source']} → {paths['target']}",
    )


def summary_text(config: RunConfig, result: dict[str, Any], data_line: str) -> str:
    """Returns the demo's closing summary: data, figures, where runs and sets are, the champion."""
    from mlt import tracking

    lines = ["", "=" * 72, "mlt demo: done", f"data:          {data_line}"]
    ev = result.get("evaluation") or {}
    if ev:
        lines.append(f"test mAP:      {ev.get('mAP', float('nan')):.4f} (VOC07 11-point), "
                     f"{ev.get('mAP_area') or float('nan'):.4f} (area)")  # fmt: skip
    lines += [
        f"trunk run:     {result.get('trunk')}",
        f"feature set:   {result.get('feature_set')} in {config.extract.store}",
        f"best head run: {result.get('head_run')}",
    ]
    promo = result.get("promotion") or {}
    if promo:
        verdict = "champion" if promo.get("accepted") else "challenger (champion kept)"
        lines.append(f"model:         models:/{promo.get('name')}@champion  (v{promo.get('version')} is {verdict})"
                     if not promo.get("skipped") else f"model:         models:/{promo.get('name')}@champion")  # fmt: skip
    lines += [
        f"runs:          {tracking.tracking_uri(config)}",
        f"MLflow UI:     .venv/bin/mlt ui run_dir={config.run_dir}   (then http://127.0.0.1:5000)",
        "=" * 72,
    ]
    return "\n".join(lines)
