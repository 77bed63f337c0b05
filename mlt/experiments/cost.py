"""Experiment 7: cost — time and storage per stage on this machine, and head-sweep throughput.

Reads every finished run of the tracking store (pretraining, extraction, heads) — what the other
experiments made — and runs one batched sweep (``sweep.space``) on the arm's feature set to
measure heads per minute against training heads one by one.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mlt.experiments.compare import Context, pending
from mlt.experiments.report import Section, duration, table
from mlt.experiments.runner import ensure_features, ensure_trunk, run_seconds


def _finished_sweep(config) -> tuple[str, dict] | None:
    """Returns (feature set id, {"parent_run_id": …}) of the latest finished sweep of the
    config's space, or None."""
    import mlflow

    runs = mlflow.search_runs(
        search_all_experiments=True, output_format="list", max_results=50,
        filter_string="tags.`mlt.stage` = 'sweep' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )  # fmt: skip
    for r in runs:
        if r.data.params.get("sweep.space") == str(config.sweep.space):
            return r.data.tags.get("mlt.featureset.id", ""), {"parent_run_id": r.info.run_id}
    return None


def _runs(stage: str) -> list:
    import mlflow

    return mlflow.search_runs(
        search_all_experiments=True, output_format="list",
        filter_string=f"tags.`mlt.stage` = '{stage}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
    )  # fmt: skip


def _epochs(run_id: str) -> int:
    """Returns the epochs a pretraining run's trunk has: its last val_top1 step + 1 (a run that
    continued an earlier one's checkpoint logs only its own epochs, from that step on)."""
    import mlflow

    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "val_top1")]
    return max(steps) + 1 if steps else 0


def _gib(value: float | None) -> str:
    """Returns bytes as GiB with two decimals, or "n/a" (runs made before memory was logged)."""
    return "n/a" if value is None else f"{value / 2**30:.2f}"


def folder_bytes(path: Path) -> int:
    """Returns the bytes of every file under ``path`` (0 when it does not exist)."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def run(ctx: Context) -> Section:
    """Collects the stage costs and measures the sweep; returns the section."""
    import mlflow

    from mlt import tracking
    from mlt.pipeline import sweep_stage

    start = time.perf_counter()
    arm = next(iter(ctx.spec.arms))
    config = ctx.config(arm)
    tracking.setup_tracking(config)  # every lookup below is in the config's tracking store
    if ctx.existing:
        found = _finished_sweep(config)
        if found is None:
            return pending(ctx, f"the sweep of {config.sweep.space}")
        set_id, sweep = found
    else:
        trunk = ensure_trunk(config, ctx.echo, ctx.progress)
        set_id = ensure_features(config, trunk, ctx.echo, ctx.progress)
        _, sweep = sweep_stage(config, set_id, ctx.echo, ctx.progress)
    sweep_seconds = run_seconds(sweep["parent_run_id"])
    sweep_metrics = mlflow.get_run(sweep["parent_run_id"]).data.metrics
    trials = len(mlflow.search_runs(search_all_experiments=True, output_format="list",
                                    filter_string=f"tags.`mlflow.parentRunId` = '{sweep['parent_run_id']}'"))  # fmt: skip
    pre = []
    for r in _runs("pretrain"):
        m = r.data.metrics
        pre.append([r.data.tags.get("mlt.config_name"), r.data.tags.get("mlt.subset.size"),
                    _epochs(r.info.run_id), f"{m.get('train_images_per_s', np.nan):.0f}",
                    duration(run_seconds(r.info.run_id)), f"`{r.info.run_id[:8]}`"])  # fmt: skip
    ext = []
    for r in _runs("extract"):
        m = r.data.metrics
        ext.append([f"`{r.data.tags.get('mlt.featureset.id', '')[:8]}`", r.data.params.get("extract.mode", ""),
                    f"{m.get('images', np.nan):,.0f}", f"{m.get('windows', np.nan):,.0f}",
                    duration(m.get("extract_seconds", np.nan)), f"{m.get('windows_per_s', np.nan):,.0f}",
                    f"{m.get('disk_bytes', np.nan) / 2**30:.2f}", _gib(m.get("peak_anon_total_bytes")),
                    _gib(m.get("peak_rss_total_bytes"))])  # fmt: skip
    heads = [r.data.metrics.get("train_seconds", np.nan) for r in _runs("head")
             if "mlflow.parentRunId" not in r.data.tags]  # fmt: skip
    one = float(np.nanmedian(heads)) if heads else float("nan")
    per_head = sweep_seconds / trials if trials else float("nan")
    store = Path(config.extract.store)
    body = f"""
Pretraining (Ray Train, one worker on the 2 cores; images/s of the last epoch):

{table(["config", "classes", "epochs", "images / s", "wall time", "run"], pre)}

Extraction (Ray actors; GiB on disk in the LMDB feature store; peak memory of the driver plus every
actor: private = sampled peak of anonymous memory, what the processes hold; RSS = resident peak,
which also counts touched pages of the LMDB map and of Ray's shared-memory object store):

{table(["feature set", "mode", "images", "windows", "time", "windows / s", "GiB", "private GiB", "RSS GiB"], ext)}

Heads: {len(heads)} trained one by one, median training time **{duration(one)}** each. A batched
sweep of {trials} heads on `{set_id[:8]}` ({config.sweep.space}) took **{duration(sweep_seconds)}**:
{duration(per_head)} per head, **{60 / per_head if per_head else float("nan"):.1f} heads / min**
({one / per_head if per_head else float("nan"):.1f}x a head trained alone, epochs differ by the space);
peak memory of the sweep's process: private {_gib(sweep_metrics.get("peak_anon_driver_bytes"))} GiB,
resident {_gib(sweep_metrics.get("peak_rss_driver_bytes"))} GiB (the train and val windows are memory-mapped
from the store's cache: resident as read, private never).

Storage now: feature store {folder_bytes(store) / 2**30:.1f} GiB (materialised cache
{folder_bytes(store / "cache") / 2**30:.1f} GiB of it), run folder {folder_bytes(Path(config.run_dir)) / 2**30:.1f} GiB.
"""
    return Section(
        ctx.spec.name, ctx.spec.title, body, ctx.command, time.perf_counter() - start, sweep_seconds
    )
