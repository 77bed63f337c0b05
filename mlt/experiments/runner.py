"""Takes an experiment arm through the stages: trunk → feature set → one head per seed → test.

Every step is skipped when its outputs exist for the same inputs, so an interrupted experiment
resumes where it stopped and a finished one re-renders its tables in seconds: the trunk is the
pipeline's (:func:`mlt.pipeline.pretrain_stage`, or ``trunk`` given), the feature set is found
by id, and a head is a FINISHED MLflow run of stage ``head`` tagged with :func:`head_digest`
(trunk, windows, extraction, head settings, seed, target set); it is scored on test once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlt.config import RunConfig
from mlt.experiments.report import Stats
from mlt.pipeline import (
    DIGEST_TAG,
    evaluate_stage,
    finished_run,
    pretrain_digest,
    pretrain_stage,
    stage_digest,
)  # fmt: skip

Echo = Callable[[str], None]


@dataclass
class HeadFigures:
    """One trained head: its seed, MLflow run id, every metric of the run (val_…, test_…) and
    the run's wall time."""

    seed: int
    run_id: str
    metrics: dict[str, float]
    seconds: float = float("nan")


#: The metric that is the mean over classes of the per-class metrics ``<prefix><class>``.
CLASS_MEAN = {"test_ap_": "test_mAP", "val_ap_": "val_mAP"}


@dataclass
class ArmResult:
    """What an arm produced: its config, trunk (and its run's figures), feature set (and its
    extraction figures) and heads.

    ``source`` is empty for an arm found in (or run into) this tracking store, else where its
    figures were read from (:mod:`mlt.experiments.record`); ``summary`` holds metric → Stats for
    an arm recorded without its per-seed heads.
    """

    arm: str
    config: RunConfig
    trunk: str
    feature_set: str | None
    heads: list[HeadFigures] = field(default_factory=list)
    trunk_info: dict[str, Any] = field(default_factory=dict)
    extraction: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Stats] = field(default_factory=dict)
    source: str = ""

    @property
    def seeds(self) -> int:
        """Returns how many head seeds the arm's figures are over."""
        if self.heads:
            return len(self.heads)
        return max((s.n for s in self.summary.values()), default=0)

    @property
    def per_seed(self) -> bool:
        """Returns whether the figures come from per-seed heads (else from a recorded summary)."""
        return bool(self.heads) or not self.summary

    def values(self, metric: str) -> np.ndarray:
        """Returns the metric of every head (NaN where a head lacks it), in seed order."""
        return np.array([h.metrics.get(metric, np.nan) for h in self.heads], dtype=np.float64)

    def stats(self, metric: str) -> Stats:
        """Returns the metric over the arm's seeds (from its heads, else its recorded summary)."""
        if self.per_seed:
            return Stats.of(self.values(metric))
        return self.summary.get(metric, Stats.of([]))

    def class_mean(self, classes: list[str], prefix: str = "test_ap_") -> Stats:
        """Returns the mean over ``classes`` of the ``<prefix><class>`` metrics, over seeds
        (each seed's class mean first, then mean ± std of those)."""
        if self.per_seed:
            per = np.stack([self.values(f"{prefix}{c}") for c in classes])
            return Stats.of(np.nanmean(per, axis=0))
        return self.stats(CLASS_MEAN.get(prefix, f"{prefix}mean"))


def head_digest(config: RunConfig, trunk: str) -> str:
    """Returns the digest of what determines a head and its test figures (seed included)."""
    return stage_digest({"trunk": trunk, "target": str(Path(config.data.target).resolve()),
                         "splits": [config.data.train_split, config.data.test_split],
                         "limit": config.data.target_limit, "windows": config.windows.model_dump(mode="json"),
                         "extract": config.extract.model_dump(mode="json", exclude={"workers", "batch_size", "chunk_images", "store"}),
                         "head": config.head.digest_fields(), "eval": config.eval.model_dump(mode="json")})  # fmt: skip


def head_layer(config: RunConfig) -> str:
    """Returns the layer a head reads: ``c5`` when it retrains FC6 (``head.unfreeze``), else ``fc7``."""
    return "fc7" if config.head.unfreeze == "none" else "c5"


def trunk_figures(trunk: str) -> dict[str, Any]:
    """Returns a trunk run's final metrics plus ``seconds`` (its wall time) and ``classes``."""
    import mlflow

    if not _is_run_id(trunk):
        return {"seconds": float("nan")}
    run = mlflow.get_run(trunk)
    out: dict[str, Any] = dict(run.data.metrics)
    out["seconds"] = run_seconds(trunk)
    out["classes"] = run.data.tags.get("mlt.subset.size")
    return out


def seeded(config: RunConfig, seed: int) -> RunConfig:
    """Returns a copy of ``config`` whose head has ``seed``."""
    head = config.head.model_copy(update={"seed": seed})
    return config.model_copy(update={"head": head})


def ensure_trunk(
    config: RunConfig, echo: Echo, progress: bool = True, trunk: str | None = None
) -> str:
    """Returns the trunk's run id (or ``trunk`` when given): a finished pretraining run or a new one."""
    if trunk is not None:
        return trunk
    return pretrain_stage(config, echo, progress)


def ensure_features(config: RunConfig, trunk: str, echo: Echo, progress: bool = True) -> str:
    """Returns the id of the arm's feature set, extracting it when it does not exist yet."""
    from mlt.extract import run_extract

    s = run_extract(config, trunk, progress=progress)
    echo(f"  extract: {'found' if s['skipped'] else 'wrote'} feature set {s['feature_set']}")
    return s["feature_set"]


def run_arm(
    arm: str, config: RunConfig, seeds: list[int], echo: Echo = print, progress: bool = True,
    trunk: str | None = None, prune: bool = False, existing: bool = False,
) -> ArmResult:  # fmt: skip
    """Runs one arm: its trunk, and a head per seed trained on train, chosen on val, scored on test.

    The feature set is extracted only when some head still has to be trained or scored.
    ``prune`` removes the set's materialise cache afterwards (the set itself stays).
    ``existing`` runs nothing: the result holds the finished trunk and scored heads found
    (trunk ``""`` and no heads when the arm has not been pretrained yet).
    """
    import mlflow

    from mlt import tracking
    from mlt.heads.run import cache_dir, run_train_head

    tracking.setup_tracking(config)
    echo(f"[{arm}]")
    if existing:
        found = trunk or finished_run("pretrain", pretrain_digest(config))
        trunk = found if isinstance(found, str) or found is None else found.info.run_id
        if trunk is None:
            echo("  not pretrained yet")
            return ArmResult(arm, config, "", None)
    trunk = ensure_trunk(config, echo, progress, trunk)
    result = ArmResult(arm, config, trunk, None, trunk_info=trunk_figures(trunk))
    for seed in seeds:
        cfg = seeded(config, seed)
        digest = head_digest(cfg, trunk)
        run = finished_run("head", digest)
        if existing and (run is None or f"{config.data.test_split}_mAP" not in run.data.metrics):
            echo(f"  head seed {seed}: not trained and scored yet")
            continue
        if run is None:
            if result.feature_set is None:
                result.feature_set = ensure_features(config, trunk, echo, progress)
            s = run_train_head(cfg, result.feature_set, head_layer(cfg), progress=progress)
            mlflow.MlflowClient().set_tag(s["run_id"], DIGEST_TAG, digest)
            run_id = s["run_id"]
            echo(f"  head seed {seed}: run {run_id}, val mAP {s['val_mAP']:.4f}")
        else:
            run_id = run.info.run_id
            echo(f"  head seed {seed}: found run {run_id}")
            result.feature_set = result.feature_set or run.data.tags.get("mlt.featureset.id")
        metrics = mlflow.get_run(run_id).data.metrics
        if f"{config.data.test_split}_mAP" not in metrics:
            if result.feature_set is None or not _store_has(config, result.feature_set):
                result.feature_set = ensure_features(config, trunk, echo, progress)
            evaluate_stage(cfg, run_id, lambda line: None)
            metrics = mlflow.get_run(run_id).data.metrics
        result.heads.append(HeadFigures(seed, run_id, dict(metrics), run_seconds(run_id)))
    if result.feature_set:
        result.extraction = extraction_figures(result.feature_set)
    if prune and result.feature_set:
        removed = prune_cache(cache_dir(config), result.feature_set)
        if removed:
            echo(
                f"  pruned {removed / 2**30:.1f} GiB of materialised features of {result.feature_set}"
            )
    return result


def stage_seconds(results: dict[str, ArmResult] | list[ArmResult]) -> float:
    """Returns the summed wall time of the arms' stage runs: trunks, extractions, heads.

    A trunk or feature set shared by several arms is counted once; a stage whose time is not
    known (an arm recorded without it) counts 0.
    """
    arms = list(results.values()) if isinstance(results, dict) else list(results)
    trunks = {r.trunk: r.trunk_info.get("seconds", np.nan) for r in arms if r.trunk}
    sets = {
        r.feature_set: r.extraction.get("extract_seconds", np.nan) for r in arms if r.feature_set
    }
    heads = [h.seconds for r in arms for h in r.heads]
    return float(np.nansum([*trunks.values(), *sets.values(), *heads]))


def _is_run_id(ref: str) -> bool:
    return len(ref) == 32 and all(c in "0123456789abcdef" for c in ref)


def _store_has(config: RunConfig, set_id: str) -> bool:
    from featurestore import FeatureStore

    return FeatureStore(Path(config.extract.store)).exists(set_id)


def prune_cache(cache: Path, set_id: str) -> int:
    """Removes the materialised matrices of ``set_id`` from ``cache``; returns the bytes freed."""
    freed = 0
    for path in Path(cache).glob(f"{set_id}-*.npy"):
        freed += path.stat().st_size
        path.unlink()
    return freed


def extraction_figures(set_id: str) -> dict[str, Any]:
    """Returns the extract run's figures of a feature set (seconds, windows, windows/s, bytes)."""
    import mlflow

    runs = mlflow.search_runs(
        search_all_experiments=True, output_format="list", max_results=1,
        filter_string=f"tags.`mlt.featureset.id` = '{set_id}' and tags.`mlt.stage` = 'extract'",
        order_by=["attributes.start_time DESC"],
    )  # fmt: skip
    return dict(runs[0].data.metrics) if runs else {}


def run_seconds(run_id: str) -> float:
    """Returns the wall time of an MLflow run (end − start), NaN when unfinished."""
    import mlflow

    info = mlflow.get_run(run_id).info
    if not info.end_time:
        return float("nan")
    return (info.end_time - info.start_time) / 1000.0
