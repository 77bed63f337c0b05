"""The sweep stage: many head configurations trained on one cached feature set, best one kept.

The search space is a YAML file (``sweep.space``, e.g. ``configs/sweeps/heads.yaml``) with one
key per ``head.*`` field (:class:`~mlt.config.HeadConfig`)::

    fca_width: [256, 1024]          # a list: a grid axis (sweep.search=grid) or a choice (random)
    lr: {choice: [0.01, 0.003]}     # the same as a list
    dropout: {uniform: [0.0, 0.6]}  # random search only: uniform in [a, b]
    weight_decay: {loguniform: [1.0e-5, 1.0e-3]}  # random search only: log-uniform, 0 < a < b
    epochs: 8                       # a single value: fixed for every trial

Keys the file leaves out come from the run config's ``head`` section. With ``search: grid``
every combination of the lists is one trial; with ``search: random``, ``sweep.num_samples``
trials are drawn (seeded by the run config's ``seed``). Errors name the file, the key and the
value.

Two ways to train the trials, both reading the feature set once (:func:`prepare_inputs`, the
memmap cache under ``<store>/cache``):

- **Ray Tune** (``sweep.batched: false``): a function trainable per trial with 1 CPU; the
  train/val windows go into the object store once (``tune.with_parameters``) so no trial reads
  the store; ASHA (``sweep.scheduler: asha``; grace period a quarter of the epochs, reduction
  factor 3) or FIFO stops trials on ``val_mAP`` reported every epoch. A trial reports a
  checkpoint of its head each time its ``val_mAP`` improves, so the best weights come back.
- **Batched** (``sweep.batched: true``, the CPU default): every configuration trained in-process
  by :func:`~mlt.heads.batched.train_heads_batched`, many heads per vectorised pass.

Either way the sweep is one parent MLflow run (stage ``sweep``, lineage tags of the feature
set) with a nested child run per trial (its head params, per-epoch metrics, best val mAP),
logged from the driver once the trials are over; the best trial's child run carries
``head/head.pt`` (so ``mlt evaluate --head <child run id>`` works) and its per-class validation
tables; the parent carries the best configuration, its tables in both AP forms and the sweep's
speed (heads per minute).
"""

from __future__ import annotations

import itertools
import math
import tempfile
import time
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from mlt.config import HeadConfig, RunConfig, load_yaml_mapping
from mlt.errors import InputError

KINDS = ("choice", "uniform", "loguniform")
_FORMAT_HINT = "a list (grid axis / choice), {choice: [...]}, {uniform: [a, b]}, {loguniform: [a, b]} or one value"


# -- the search space ---------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """One searched field: ``kind`` is ``grid`` (a list), ``choice``, ``uniform`` or ``loguniform``."""

    key: str
    kind: str
    values: tuple


@dataclass(frozen=True)
class SearchSpace:
    """A parsed search space: the searched axes and the fixed values, from ``path``."""

    path: str
    axes: tuple[Axis, ...]
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def grid_size(self) -> int:
        """Returns the number of grid points (combinations of every axis's values)."""
        return math.prod(len(a.values) for a in self.axes)

    def grid(self) -> list[dict[str, Any]]:
        """Returns every combination of the axes' values (first axis slowest), fixed values added."""
        names = [a.key for a in self.axes]
        return [
            {**self.fixed, **dict(zip(names, combo, strict=True))}
            for combo in itertools.product(*(a.values for a in self.axes))
        ]

    def sample(self, n: int, seed: int = 0) -> list[dict[str, Any]]:
        """Returns ``n`` random draws (lists are choices), fixed values added; seeded."""
        rng = np.random.default_rng([seed, 7])
        out = []
        for _ in range(n):
            draw = dict(self.fixed)
            for a in self.axes:
                if a.kind in ("grid", "choice"):
                    draw[a.key] = a.values[int(rng.integers(len(a.values)))]
                elif a.kind == "uniform":
                    draw[a.key] = float(rng.uniform(*a.values))
                else:
                    lo, hi = a.values
                    draw[a.key] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            out.append(draw)
        return out

    def trials(self, search: str, num_samples: int, seed: int = 0) -> list[dict[str, Any]]:
        """Returns the trials' head overrides: the grid, or ``num_samples`` random draws."""
        return self.grid() if search == "grid" else self.sample(num_samples, seed)

    def tune_space(self, search: str) -> dict[str, Any]:
        """Returns the Ray Tune ``param_space``: grid_search / choice / uniform / loguniform."""
        from ray import tune

        space: dict[str, Any] = dict(self.fixed)
        for a in self.axes:
            if a.kind in ("grid", "choice"):
                values = list(a.values)
                space[a.key] = tune.grid_search(values) if search == "grid" else tune.choice(values)
            elif a.kind == "uniform":
                space[a.key] = tune.uniform(*a.values)
            else:
                space[a.key] = tune.loguniform(*a.values)
        return space


def _check_value(path: Path, key: str, value: Any) -> Any:
    """Returns ``value`` validated as head.<key> (as pydantic coerces it); errors name file and key."""
    try:
        return getattr(HeadConfig.model_validate({key: value}), key)
    except ValidationError as e:
        raise InputError(path, key, value, e.errors()[0]["msg"]) from None


def _is_float_field(key: str) -> bool:
    return typing.get_type_hints(HeadConfig)[key] is float


def load_space(path: str | Path, search: str = "grid") -> SearchSpace:
    """Returns the search space of a YAML file (format in this module's docstring).

    ``search`` ("grid" or "random") decides what is allowed: uniform and log-uniform ranges
    need random search. Unknown keys, empty lists and values a head config would reject are
    :class:`InputError` naming the file, the key and the value.
    """
    path = Path(path)
    if search not in ("grid", "random"):
        raise InputError(None, "sweep.search", search, "grid or random")
    data = load_yaml_mapping(path)
    fields = list(HeadConfig.model_fields)
    if not data:
        raise InputError(
            path, None, data, f"at least one head field to search: {', '.join(fields)}"
        )
    axes, fixed = [], {}
    for key, spec in data.items():
        if key not in HeadConfig.model_fields:
            raise InputError(path, str(key), spec, f"a head field: one of {', '.join(fields)}")
        if isinstance(spec, list):
            kind, values = "grid", spec
        elif isinstance(spec, dict):
            if len(spec) != 1 or next(iter(spec)) not in KINDS:
                raise InputError(path, key, spec, f"{_FORMAT_HINT} (one key: {', '.join(KINDS)})")
            kind, values = next(iter(spec.items()))
            if not isinstance(values, list):
                raise InputError(path, f"{key}.{kind}", values, "a list")
        else:
            fixed[key] = _check_value(path, key, spec)
            continue
        if not values:
            raise InputError(path, key, spec, "at least one value")
        if kind in ("uniform", "loguniform"):
            if search != "random":
                raise InputError(
                    path,
                    key,
                    spec,
                    f"a list of values for grid search ({kind} needs sweep.search=random)",
                )
            if not _is_float_field(key):
                raise InputError(
                    path, key, spec, f"a list or choice: head.{key} is not a float field"
                )
            if len(values) != 2 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values
            ):
                raise InputError(path, f"{key}.{kind}", values, "[a, b]: two numbers")
            lo, hi = (float(v) for v in values)
            if not lo < hi or (kind == "loguniform" and lo <= 0):
                raise InputError(
                    path,
                    f"{key}.{kind}",
                    values,
                    "a < b" + (" and a > 0" if kind == "loguniform" else ""),
                )
            values = [_check_value(path, key, v) for v in (lo, hi)]
        else:
            values = [_check_value(path, key, v) for v in values]
        axes.append(Axis(key, kind, tuple(values)))
    return SearchSpace(str(path), tuple(axes), fixed)


def head_configs(base: HeadConfig, trials: Sequence[dict[str, Any]]) -> list[HeadConfig]:
    """Returns one HeadConfig per trial: ``base`` with the trial's values applied."""
    return [HeadConfig.model_validate({**base.model_dump(), **t}) for t in trials]


# -- trials -------------------------------------------------------------------------------


@dataclass
class Trial:
    """One trained configuration: its values, per-epoch history, best epoch and outcome."""

    index: int
    values: dict[str, Any]
    head: HeadConfig
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_map: float = float("nan")
    status: str = "finished"  # finished | early_stopped | scheduler_stopped | failed
    error: str | None = None
    seconds: float = 0.0
    start: float = 0.0  # wall-clock seconds (time.time)
    end: float = 0.0
    model: torch.nn.Module | None = None
    checkpoint: Any = None  # Ray Tune: the checkpoint with the best weights

    @property
    def score(self) -> float:
        """Returns the best val mAP, -inf when it is missing (failed trial, no positives)."""
        return self.best_val_map if math.isfinite(self.best_val_map) else -math.inf


def _stop_reason(history: list[dict], hc: HeadConfig, best_epoch: int) -> str:
    """Returns why training ended: ran all epochs, patience ran out, or stopped by a scheduler."""
    run = len(history)
    if run >= hc.epochs:
        return "finished"
    if run - best_epoch >= hc.patience:
        return "early_stopped"
    return "scheduler_stopped"


def _run_batched(
    inputs, configs: list[HeadConfig], trials: list[dict], config: RunConfig, progress: bool
) -> list[Trial]:
    from mlt.heads.batched import train_heads_batched

    start = time.time()
    results = train_heads_batched(
        inputs.train, inputs.val, configs, inputs.classes, inputs.val_gt, config.eval.k, config.eval.ap,
        progress=progress,
    )  # fmt: skip
    end = time.time()
    out = []
    for i, (values, hc, r) in enumerate(zip(trials, configs, results, strict=True)):
        t = Trial(
            i,
            values,
            hc,
            r.history,
            r.best_epoch,
            r.best_val_map,
            seconds=r.seconds,
            start=start,
            end=end,
        )
        if r.history and r.history[-1].get("diverged"):
            t.status, t.error = (
                "failed",
                f"training diverged at epoch {r.history[-1]['epoch']} (lr={hc.lr})",
            )
        else:
            t.status = _stop_reason(r.history, hc, r.best_epoch)
        t.model = r.model
        out.append(t)
    return out


def tune_trial(params: dict, *, train, val, val_gt, classes, base: dict, k, form: str) -> None:
    """Ray Tune trainable: trains one head, reports every epoch, checkpoints each improvement."""
    from ray import tune

    from mlt.heads.model import Head
    from mlt.heads.train import train_head

    torch.set_num_threads(1)
    hc = HeadConfig.model_validate({**base, **params})
    torch.manual_seed(hc.seed)  # the same initial weights train_head would draw
    model = Head(train.dim, train.num_classes, hc.fca_width, hc.dropout)
    best: list[float | None] = [None]

    def report(epoch: int, metrics: dict) -> None:
        m = {name: float(v) for name, v in metrics.items()}
        m["epoch"] = epoch
        score = m.get("val_mAP", float("nan"))
        if best[0] is None or score > best[0]:
            best[0] = score
            with tempfile.TemporaryDirectory(prefix="mlt-trial-") as d:
                torch.save(
                    {"spec": model.spec(), "state": model.state_dict(), "epoch": epoch},
                    Path(d) / "head.pt",
                )
                tune.report(m, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(m)

    train_head(train, val, hc, classes, val_gt, k, form, model=model, callback=report)


def _run_tune(inputs, space: SearchSpace, config: RunConfig, progress: bool) -> list[Trial]:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from mlt.raysession import ensure_ray

    sc = config.sweep
    ensure_ray()
    base = config.head.model_dump(mode="json")
    trainable = tune.with_parameters(
        tune_trial, train=inputs.train, val=inputs.val, val_gt=inputs.val_gt, classes=inputs.classes,
        base=base, k=config.eval.k, form=config.eval.ap,
    )  # fmt: skip
    trainable = tune.with_resources(trainable, {"cpu": 1})
    epochs = [config.head.epochs, *(v for a in space.axes if a.key == "epochs" for v in a.values)]
    max_t = int(space.fixed.get("epochs", max(epochs)))
    scheduler = (
        ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=max(1, max_t // 4), reduction_factor=3)
        if sc.scheduler == "asha" else FIFOScheduler()
    )  # fmt: skip
    storage = (Path(config.run_dir) / "ray").resolve()
    tuner = tune.Tuner(
        trainable,
        param_space=space.tune_space(sc.search),
        tune_config=tune.TuneConfig(
            metric="val_mAP", mode="max", scheduler=scheduler,
            num_samples=1 if sc.search == "grid" else sc.num_samples,
            search_alg=BasicVariantGenerator(random_state=config.seed),
        ),
        run_config=tune.RunConfig(
            name=f"sweep-{inputs.fs.id[:8]}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(storage),
            verbose=1 if progress else 0, checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )  # fmt: skip
    grid = tuner.fit()
    trials = []
    for i, result in enumerate(grid):
        values = {
            key: result.config[key] for key in result.config if key in HeadConfig.model_fields
        }
        hc = HeadConfig.model_validate({**base, **values})
        df = result.metrics_dataframe
        rows = [] if df is None or df.empty else df.to_dict("records")
        history = [
            {name: r[name] for name in ("epoch", "train_loss", "train_windows", "val_mAP", "epoch_seconds") if name in r}
            for r in rows
        ]  # fmt: skip
        history = [{**h, "epoch": int(h["epoch"])} for h in history if "epoch" in h]
        t = Trial(i, values, hc, history)
        scores = [h.get("val_mAP", float("nan")) for h in history]
        finite = [s for s in scores if math.isfinite(s)]
        if history:
            t.best_epoch = (
                history[int(np.nanargmax(scores))]["epoch"] if finite else history[0]["epoch"]
            )
            t.best_val_map = max(finite) if finite else float("nan")
        metrics = result.metrics or {}
        t.seconds = float(metrics.get("time_total_s", 0.0))
        t.end = float(metrics.get("timestamp", time.time()))
        t.start = t.end - t.seconds
        if result.error is not None:
            t.status, t.error = "failed", f"{type(result.error).__name__}: {result.error}"[:2000]
        else:
            t.status = _stop_reason(history, hc, t.best_epoch)
        t.checkpoint = result.checkpoint
        trials.append(t)
    return trials


def _trial_model(trial: Trial) -> torch.nn.Module:
    """Returns the trial's best head (trained in-process, or read from its Tune checkpoint)."""
    if trial.model is not None:
        return trial.model
    from mlt.heads.model import Head

    if trial.checkpoint is None:
        raise RuntimeError(f"trial {trial.index} left no checkpoint")
    with trial.checkpoint.as_directory() as d:
        data = torch.load(Path(d) / "head.pt", map_location="cpu", weights_only=True)
    model = Head(**data["spec"])
    model.load_state_dict(data["state"])
    return model.eval()


# -- MLflow -------------------------------------------------------------------------------


def _log_children(parent_id: str, experiment_id: str, trials: list[Trial], tags: dict) -> list[str]:
    """Logs one nested child run per trial (from the driver, one writer); returns their run ids."""
    import mlflow
    from mlflow.entities import Metric, Param

    from mlt.tracking import flatten, redact

    client = mlflow.MlflowClient()
    ids = []
    for t in trials:
        run_tags = {
            **{k: str(redact(v)) for k, v in tags.items() if v is not None},
            "mlflow.parentRunId": parent_id, "mlt.stage": "sweep-trial",
            "mlt.trial.index": str(t.index), "mlt.trial.status": t.status,
        }  # fmt: skip
        if t.error:
            run_tags["mlt.trial.error"] = t.error[:5000]
        run = client.create_run(
            experiment_id,
            start_time=int(t.start * 1000),
            tags=run_tags,
            run_name=f"trial-{t.index:03d}",
        )
        rid = run.info.run_id
        params = [Param(k, v) for k, v in flatten({"head": t.head.model_dump(mode="json")}).items()]
        params += [Param(f"trial.{k}", str(v)) for k, v in t.values.items()]
        stamp = int(t.end * 1000)
        metrics = [
            Metric(name, float(v), stamp, int(h["epoch"]))
            for h in t.history for name, v in h.items()
            if name != "epoch" and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        ]  # fmt: skip
        final = {
            "best_val_mAP": t.best_val_map,
            "best_epoch": t.best_epoch,
            "epochs_run": len(t.history),
            "trial_seconds": t.seconds,
        }
        metrics += [Metric(k, float(v), stamp, 0) for k, v in final.items() if math.isfinite(v)]
        for i in range(0, max(len(params), len(metrics)), 100):
            client.log_batch(rid, metrics=metrics[i : i + 100], params=params[i : i + 100])
        client.set_terminated(rid, "FAILED" if t.status == "failed" else "FINISHED", end_time=stamp)
        ids.append(rid)
    return ids


def run_sweep(
    config: RunConfig,
    fs_ref: str,
    layer: str = "fc7",
    space: str | Path | None = None,
    batched: bool | None = None,
    dataset_root: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs the sweep on a feature set and records it; returns a summary.

    The summary holds the parent and best child run ids, the best configuration (its searched
    values and the whole head config), its val mAP in both AP forms and its per-class table, the
    trial count and outcomes, the training wall time and the heads trained per minute.
    ``space`` and ``batched`` default to ``sweep.space`` and ``sweep.batched``.
    """
    import mlflow
    from mlflow.entities import Metric

    from mlt import tracking
    from mlt.heads.artifact import ARTIFACT_PATH, FILE_NAME, save_head
    from mlt.heads.run import head_meta, lineage_tags, prepare_inputs
    from mlt.heads.train import evaluate_head_forms

    sc = config.sweep
    space_path = Path(space) if space is not None else Path(sc.space)
    search_space = load_space(space_path, sc.search)
    use_batched = sc.batched if batched is None else batched
    trials_values = search_space.trials(sc.search, sc.num_samples, config.seed)
    configs = head_configs(config.head, trials_values)  # validates every trial up front
    for hc in configs:
        if getattr(hc, "unfreeze", "none") != "none":
            raise InputError(space_path, "unfreeze", hc.unfreeze,
                             "none: sweeps train FCa/FCb heads on frozen features (train-head for unfrozen ones)")  # fmt: skip
    inputs = prepare_inputs(config, fs_ref, layer, dataset_root)
    tags = lineage_tags(inputs.fs, layer)
    path_name = "batched" if use_batched else "tune"
    with tracking.run(config, f"sweep-{inputs.fs.id[:8]}", "sweep") as parent:
        tracking.log_config(config, sections=("head", "sweep", "eval"))
        tracking.set_tags({**tags, "mlt.sweep.path": path_name})
        mlflow.log_params({"sweep.path": path_name, "sweep.trials": len(configs)})
        mlflow.log_text(space_path.read_text(), "sweep/space.yaml")
        start = time.perf_counter()
        if use_batched:
            trials = _run_batched(inputs, configs, trials_values, config, progress)
        else:
            trials = _run_tune(inputs, search_space, config, progress)
        seconds = time.perf_counter() - start
        child_ids = _log_children(parent.info.run_id, parent.info.experiment_id, trials, tags)
        best = max(trials, key=lambda t: (t.score, -t.index))
        if best.score == -math.inf:
            raise RuntimeError(
                f"no trial of the sweep produced a validation mAP ({len(trials)} trials)"
            )
        best_id = child_ids[best.index]
        model = _trial_model(best)
        classes, k = inputs.classes, config.eval.k
        tables = evaluate_head_forms(model, inputs.val, inputs.val_gt, classes, k)
        best_config = config.model_copy(update={"head": best.head})
        client = mlflow.MlflowClient()
        with tempfile.TemporaryDirectory(prefix="mlt-sweep-") as tmp:
            head_file = save_head(
                Path(tmp) / FILE_NAME, model, head_meta(inputs, best_config, best.best_epoch)
            )
            client.log_artifact(best_id, str(head_file), ARTIFACT_PATH)
        client.set_tag(best_id, "mlt.trial.best", "true")
        for form, table in tables.items():
            stamp = int(time.time() * 1000)
            metrics = [Metric(n, v, stamp, 0) for n, v in table.to_metrics(f"val_{form}_").items()]
            client.log_batch(best_id, metrics=metrics)
            client.log_text(best_id, table.format(), f"tables/val_{form}.txt")
            mlflow.log_metrics(table.to_metrics(f"best_val_{form}_"))
            mlflow.log_text(table.format(), f"tables/best_val_{form}.txt")
        failed = sum(t.status == "failed" for t in trials)
        heads_per_minute = 60.0 * len(trials) / seconds if seconds > 0 else float("nan")
        mlflow.log_params({f"best.{key}": value for key, value in best.values.items()})
        mlflow.log_dict({"trial": best.index, "run_id": best_id, "values": best.values,
                         "head": best.head.model_dump(mode="json")}, "sweep/best_config.json")  # fmt: skip
        mlflow.log_text(_trials_table(trials), "sweep/trials.txt")
        mlflow.log_metrics({"best_val_mAP": tables[config.eval.ap].mean_ap, "trials": len(trials), "failed_trials": failed,
                            "sweep_seconds": seconds, "heads_per_minute": heads_per_minute})  # fmt: skip
        tracking.set_tags({"mlt.sweep.best_run": best_id})
        return {
            "parent_run_id": parent.info.run_id,
            "best_run_id": best_id,
            "feature_set": inputs.fs.id,
            "path": path_name,
            "best_config": best.values,
            "best_head": best.head.model_dump(mode="json"),
            "best_epoch": best.best_epoch,
            "best_val_mAP": tables[config.eval.ap].mean_ap,
            "best_val_mAP_voc07": tables["voc07"].mean_ap,
            "best_val_mAP_area": tables["area"].mean_ap,
            "trials": len(trials),
            "outcomes": {
                s: sum(t.status == s for t in trials) for s in sorted({t.status for t in trials})
            },
            "heads_per_minute": heads_per_minute,
            "seconds": seconds,
            "table": tables[config.eval.ap].format(),
        }


def _trials_table(trials: list[Trial]) -> str:
    """Returns a text table of every trial: its values, best val mAP, epochs and outcome."""
    keys = sorted({k for t in trials for k in t.values})
    lines = ["\t".join(["trial", *keys, "best_val_mAP", "best_epoch", "epochs", "status"])]
    for t in sorted(trials, key=lambda t: -t.score):
        lines.append("\t".join([str(t.index), *(str(t.values.get(k)) for k in keys), f"{t.best_val_map:.4f}",
                                str(t.best_epoch), str(len(t.history)), t.status]))  # fmt: skip
    return "\n".join(lines) + "\n"
