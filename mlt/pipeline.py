"""The whole pipeline from one run config: pretrain → extract → sweep → evaluate → promote.

Each stage is skipped, and says so, when its outputs exist for the same inputs: a finished
pretraining run with the same source and pretrain settings (tag ``mlt.stage_digest``), the
feature set of the same id, a finished sweep with the same feature set, head settings and space,
a head run that already has its test figures, a registered version of the same head run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mlt.config import RunConfig
from mlt.errors import InputError

STAGES = ("pretrain", "extract", "sweep", "evaluate", "promote")
DIGEST_TAG = "mlt.stage_digest"


def stage_digest(payload: Any) -> str:
    """Returns a short hash of a stage's inputs (JSON, keys sorted)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: A generated source set (e.g. mlt.experiments.scratch) names what it was built from here.
SOURCE_RECIPE = ".complete"


def pretrain_digest(config: RunConfig) -> str:
    """Returns the digest of what determines a pretraining run: source, subset, settings.

    A generated source folder's recipe file (:data:`SOURCE_RECIPE`) is part of it, so the same
    folder rebuilt from another target set is another source.
    """
    data = config.data
    payload = {"source": str(Path(data.source).resolve()), "subset": data.subset.model_dump(mode="json"),
               "label_map": str(data.label_map), "pretrain": config.pretrain.model_dump(mode="json"),
               "name": config.name}  # fmt: skip
    recipe = Path(data.source) / SOURCE_RECIPE
    if recipe.is_file():
        payload["source_recipe"] = recipe.read_text()
    return stage_digest(payload)


def sweep_digest(config: RunConfig, set_id: str) -> str:
    """Returns the digest of what determines a sweep: feature set, head, sweep, space, eval."""
    space = Path(config.sweep.space)
    return stage_digest({"features": set_id, "head": config.head.digest_fields(),
                         "sweep": config.sweep.model_dump(mode="json"), "eval": config.eval.model_dump(mode="json"),
                         "space": space.read_text() if space.is_file() else None,
                         "limit": config.data.target_limit})  # fmt: skip


def finished_run(stage: str, digest: str):
    """Returns the latest FINISHED run of ``stage`` tagged with ``digest``, or None."""
    import mlflow

    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`mlt.stage` = '{stage}' and tags.`{DIGEST_TAG}` = '{digest}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list",
    )  # fmt: skip
    return runs[0] if runs else None


def _tag(run_id: str, key: str, value: str) -> None:
    import mlflow

    mlflow.MlflowClient().set_tag(run_id, key, value)


def run_pipeline(
    config: RunConfig,
    stages: Sequence[str] = STAGES,
    trunk: str | None = None,
    features: str | None = None,
    model_name: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs ``stages`` in order from one config; returns what each produced (ids, figures).

    ``trunk`` (a run id or checkpoint) stands in for pretraining and ``features`` (a set id)
    for extraction when those stages are left out.
    """
    from mlt import tracking

    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise InputError("<command line>", "--stage", unknown, f"stages among {', '.join(STAGES)}")
    tracking.setup_tracking(config)
    out: dict[str, Any] = {"stages": list(stages)}
    model_name = model_name or f"mlt-{config.name}"

    if "pretrain" in stages:
        trunk = pretrain_stage(config, echo, progress)
    out["trunk"] = trunk
    if "extract" in stages:
        if trunk is None:
            raise InputError("<command line>", "--trunk", None, "a trunk when pretrain is not run")
        from mlt.extract import run_extract

        s = run_extract(config, trunk, progress=progress)
        features = s["feature_set"]
        echo(
            f"extract: {'skipped, feature set exists' if s['skipped'] else 'wrote'} {features} ({s['path']})"
        )
    out["feature_set"] = features
    head_run = None
    if "sweep" in stages:
        if features is None:
            raise InputError(
                "<command line>", "--features", None, "a feature set when extract is not run"
            )
        head_run, out["sweep"] = sweep_stage(config, features, echo, progress)
    out["head_run"] = head_run
    if "evaluate" in stages and head_run:
        out["evaluation"] = evaluate_stage(config, head_run, echo)
    if "promote" in stages and head_run:
        out["promotion"] = _promote(config, head_run, model_name, echo)
    return out


def pretrain_stage(config: RunConfig, echo: Callable[[str], None], progress: bool) -> str:
    """Returns the trunk run id: a finished run with the same inputs, or a new one."""
    from mlt.train.pretrain import run_pretrain

    digest = pretrain_digest(config)
    run = finished_run("pretrain", digest)
    if run is not None and run.data.tags.get("mlt.trunk.digest"):
        echo(f"pretrain: skipped, finished run {run.info.run_id} has the same inputs ({digest})")
        return run.info.run_id
    s = run_pretrain(config, progress=progress)
    _tag(s["run_id"], DIGEST_TAG, digest)
    m = s.get("metrics", {})
    echo(
        f"pretrain: run {s['run_id']}, {s['epochs']} epochs, val top-1 {m.get('val_top1', float('nan')):.3f}"
    )
    return s["run_id"]


def sweep_stage(
    config: RunConfig, features: str, echo: Callable[[str], None], progress: bool
) -> tuple[str, dict]:
    """Returns (best head run id, sweep summary): a finished sweep with the same inputs, or a new one."""
    from mlt.sweep import run_sweep

    digest = sweep_digest(config, features)
    run = finished_run("sweep", digest)
    if run is not None and run.data.tags.get("mlt.sweep.best_run"):
        best = run.data.tags["mlt.sweep.best_run"]
        echo(
            f"sweep: skipped, finished sweep {run.info.run_id} has the same inputs; best head run {best}"
        )
        return best, {"parent_run_id": run.info.run_id, "best_run_id": best, "skipped": True,
                      "best_val_mAP": run.data.metrics.get("best_val_mAP")}  # fmt: skip
    s = run_sweep(config, features, progress=progress)
    _tag(s["parent_run_id"], DIGEST_TAG, digest)
    echo(f"sweep: {s['trials']} heads ({s['path']}), best val mAP {s['best_val_mAP']:.4f}, "
         f"best head run {s['best_run_id']}")  # fmt: skip
    return s["best_run_id"], s


def evaluate_stage(config: RunConfig, head_run: str, echo: Callable[[str], None]) -> dict:
    """Returns the test evaluation of the head run (skipped when it already has test_mAP)."""
    import mlflow

    from mlt.heads.evaluation import run_evaluate

    split = config.data.test_split
    metrics = mlflow.get_run(head_run).data.metrics
    if f"{split}_mAP" in metrics:
        echo(
            f"evaluate: skipped, head run {head_run} already has {split}_mAP {metrics[f'{split}_mAP']:.4f}"
        )
        return {
            "skipped": True,
            "mAP": metrics[f"{split}_mAP"],
            "mAP_area": metrics.get(f"{split}_mAP_area"),
        }
    s = run_evaluate(config, head_run, split)
    echo(s.pop("report"))
    return s


def _promote(config: RunConfig, head_run: str, name: str, echo: Callable[[str], None]) -> dict:
    """Returns the promotion decision of the head run (skipped when a version of it exists)."""
    import mlflow

    from mlt.registry.promote import promote

    client = mlflow.MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{head_run}'")
    except Exception:  # no such registered model yet
        versions = []
    if versions:
        echo(f"promote: skipped, {name} v{versions[0].version} is already this head run")
        return {"skipped": True, "name": name, "version": versions[0].version}
    decision = promote(config, head_run, name, metric=f"{config.data.test_split}_mAP")
    echo(decision.format())
    return decision.to_dict()
