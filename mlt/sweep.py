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

- **Ray Tune** (``sweep.batched: false``): a function trainable per trial with 1 CPU, over the
  same trial list as the batched path (the grid, or the seeded draws); the train/val windows
  go into the object store once (``tune.with_parameters``) so no trial reads the store; ASHA
  (``sweep.scheduler: asha``; grace period a quarter of the epochs, reduction factor 3) or FIFO
  stops trials on ``val_mAP`` reported every epoch. A trial reports a checkpoint of its head
  each time its ``val_mAP`` improves, so the best weights come back.
- **Batched** (``sweep.batched: true``, the CPU default): every configuration trained in-process
  by :func:`~mlt.heads.batched.train_heads_batched`, many heads per vectorised pass (one pass
  per group of heads that share their training rows).

Either way the sweep is one parent MLflow run (stage ``sweep``, lineage tags of the feature
set, the digest of its inputs) with a nested child run per trial (its head params, per-epoch
metrics, best val mAP), logged from the driver as soon as the trial (or its batched group)
ends; a child that is the best so far when it is logged carries ``head/head.pt``, so the best
trial's child always does (``mlt evaluate --head <child run id>`` works) and gets its
per-class validation tables at the end; the parent carries the best configuration, its tables
in both AP forms and the sweep's speed (heads per minute).

**Resume.** Running a sweep again with the same inputs (:func:`sweep_inputs_digest`) after it
was interrupted reuses its parent run and every FINISHED child (metrics, ``head.pt``), deletes
the unfinished children and trains only the missing trials (the batched path retrains a
missing trial's whole group, so every head trains exactly as in one uninterrupted pass). The
best run and the tables are those of an uninterrupted sweep; under ASHA the stopping of the
retrained trials may differ, as ASHA's rungs only see the trials that run. A finished sweep is
not resumed: running it again starts a new one (``mlt pipeline`` skips it instead).
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import tempfile
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from mlt.config import HeadConfig, RunConfig, load_yaml_mapping
from mlt.errors import InputError, MltError
from mlt.memory import PeakSampler, memory_metrics, peak_rss_bytes, reset_peak

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

HISTORY_KEYS = ("train_loss", "train_windows", "val_mAP", "epoch_seconds")


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
    run_id: str | None = None  # its child MLflow run, once recorded

    @property
    def score(self) -> float:
        """Returns the best val mAP, -inf when it is missing (failed trial, no positives)."""
        return self.best_val_map if math.isfinite(self.best_val_map) else -math.inf

    @property
    def rank(self) -> tuple[float, int]:
        """Returns the sort key of the sweep's best trial: best val mAP, then the lower index."""
        return (self.score, -self.index)


#: A function the trainers hand each batch of finished trials to (records them in MLflow).
Record = Callable[[list[Trial]], None]


def _stop_reason(history: list[dict], hc: HeadConfig, best_epoch: int) -> str:
    """Returns why training ended: ran all epochs, patience ran out, or stopped by a scheduler."""
    run = len(history)
    if run >= hc.epochs:
        return "finished"
    if run - best_epoch >= hc.patience:
        return "early_stopped"
    return "scheduler_stopped"


def _run_batched(
    inputs, configs: list[HeadConfig], trials: list[dict], todo: set[int], config: RunConfig,
    progress: bool, record: Record,
) -> None:  # fmt: skip
    """Trains the heads of ``todo`` group by group (heads that share a vectorised pass), handing
    each group's trials to ``record`` as soon as it is done; returns None.

    A group is the unit: its heads share training rows and dropout draws, so a group with any
    trial in ``todo`` is trained whole, exactly as in an uninterrupted sweep.
    """
    from mlt.heads.batched import group_configs, train_heads_batched

    for group in group_configs(configs):
        if todo.isdisjoint(group):
            continue
        start = time.time()
        results = train_heads_batched(
            inputs.train, inputs.val, [configs[i] for i in group], inputs.classes, inputs.val_gt, config.eval.k,
            config.eval.ap, progress=progress,
        )  # fmt: skip
        end = time.time()
        batch = []
        for i, r in zip(group, results, strict=True):
            hc = configs[i]
            t = Trial(i, trials[i], hc, r.history, r.best_epoch, r.best_val_map, seconds=r.seconds,
                      start=start, end=end, model=r.model)  # fmt: skip
            if r.history and r.history[-1].get("diverged"):
                t.status = "failed"
                t.error = f"training diverged at epoch {r.history[-1]['epoch']} (lr={hc.lr})"
            else:
                t.status = _stop_reason(r.history, hc, r.best_epoch)
            batch.append(t)
        record(batch)


def tune_trial(
    params: dict, *, train, val, val_gt, classes, heads: list[dict], k, form: str
) -> None:
    """Ray Tune trainable: trains trial ``params["trial"]`` (its head config in ``heads``),
    reports every epoch and checkpoints each improvement; returns None."""
    from ray import tune

    from mlt.heads.model import Head
    from mlt.heads.train import train_head

    torch.set_num_threads(1)
    hc = HeadConfig.model_validate(heads[params["trial"]])
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


def _tune_result(index: int, values: dict, hc: HeadConfig, rows: list[dict], tune_trial_obj,
                 error: BaseException | None) -> Trial:  # fmt: skip
    """Returns the Trial of a finished Tune trial from its reported rows (one per epoch)."""
    history = [
        {name: r[name] for name in ("epoch", *HISTORY_KEYS) if name in r} for r in rows if "epoch" in r
    ]  # fmt: skip
    history = [{**h, "epoch": int(h["epoch"])} for h in history]
    t = Trial(index, values, hc, history)
    scores = [h.get("val_mAP", float("nan")) for h in history]
    finite = [s for s in scores if math.isfinite(s)]
    if history:
        t.best_epoch = (
            history[int(np.nanargmax(scores))]["epoch"] if finite else history[0]["epoch"]
        )
        t.best_val_map = max(finite) if finite else float("nan")
    last = rows[-1] if rows else {}
    t.seconds = float(last.get("time_total_s", 0.0))
    t.end = float(last.get("timestamp", time.time()))
    t.start = t.end - t.seconds
    if error is not None:
        t.status, t.error = "failed", f"{type(error).__name__}: {error}"[:2000]
    else:
        t.status = _stop_reason(history, hc, t.best_epoch)
    t.checkpoint = tune_trial_obj.checkpoint
    return t


def _tune_recorder(configs: list[HeadConfig], values: list[dict], record: Record):
    """Returns a Tune callback and stopper in one: it hands each finished trial to ``record``
    from the driver, and stops the whole run (keeping the error) when recording fails."""
    from ray.tune import Callback, Stopper

    class Recorder(Callback, Stopper):
        def __init__(self) -> None:
            self.rows: dict[str, list[dict]] = {}
            self.error: BaseException | None = None

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self.rows.setdefault(trial.trial_id, []).append(dict(result))

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self._finish(trial, None)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._finish(trial, trial.get_error() or RuntimeError("the trial failed"))

        def _finish(self, trial, error: BaseException | None) -> None:
            if self.error is not None:  # stopping: trials cut short are not results
                return
            i = int(trial.config["trial"])
            rows = self.rows.pop(trial.trial_id, [])
            try:
                record([_tune_result(i, values[i], configs[i], rows, trial, error)])
            except Exception as e:  # Tune would count it against the trial and go on
                self.error = e

        def __call__(self, trial_id, result) -> bool:
            return False

        def stop_all(self) -> bool:
            return self.error is not None

    return Recorder()


def _run_tune(
    inputs, configs: list[HeadConfig], trials: list[dict], todo: set[int], config: RunConfig,
    progress: bool, record: Record,
) -> None:  # fmt: skip
    """Trains the trials of ``todo`` as Ray Tune trials, one CPU each, handing each finished
    trial to ``record`` from the driver as soon as it ends; returns None."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from mlt.raysession import ensure_ray

    sc = config.sweep
    ensure_ray()
    trainable = tune.with_parameters(
        tune_trial, train=inputs.train, val=inputs.val, val_gt=inputs.val_gt, classes=inputs.classes,
        heads=[hc.model_dump(mode="json") for hc in configs], k=config.eval.k, form=config.eval.ap,
    )  # fmt: skip
    trainable = tune.with_resources(trainable, {"cpu": 1})
    max_t = max(configs[i].epochs for i in todo)
    scheduler = (
        ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=max(1, max_t // 4), reduction_factor=3)
        if sc.scheduler == "asha" else FIFOScheduler()
    )  # fmt: skip
    recorder = _tune_recorder(configs, trials, record)
    storage = (Path(config.run_dir) / "ray").resolve()
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(sorted(todo))},
        tune_config=tune.TuneConfig(metric="val_mAP", mode="max", scheduler=scheduler),
        run_config=tune.RunConfig(
            name=f"sweep-{inputs.fs.id[:8]}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(storage),
            verbose=1 if progress else 0, checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[recorder], stop=recorder,
        ),
    )  # fmt: skip
    tuner.fit()
    if recorder.error is not None:
        raise recorder.error


def _trial_model(trial: Trial) -> torch.nn.Module:
    """Returns the trial's best head: trained in-process, from its Tune checkpoint, or the
    ``head.pt`` its child run holds (a trial recorded by an interrupted run of the sweep)."""
    if trial.model is not None:
        return trial.model
    from mlt.heads.model import Head

    if trial.checkpoint is None:
        if trial.run_id is None:
            raise RuntimeError(f"trial {trial.index} left no checkpoint")
        from mlt.heads.artifact import load_head

        return load_head(trial.run_id).model
    with trial.checkpoint.as_directory() as d:
        data = torch.load(Path(d) / "head.pt", map_location="cpu", weights_only=True)
    model = Head(**data["spec"])
    model.load_state_dict(data["state"])
    return model.eval()


# -- MLflow -------------------------------------------------------------------------------

FAULT_ENV = "MLT_FAULT_STOP_SWEEP"  # tests: stop the sweep once this many trials were recorded
INPUTS_TAG = "mlt.sweep.inputs_digest"
OWNER_TAG = "mlt.sweep.owner"


def sweep_inputs_digest(
    config: RunConfig, set_id: str, layer: str, dataset_root: str | Path | None
) -> str:
    """Returns the digest of what decides a sweep's trials and results: the pipeline's
    :func:`~mlt.pipeline.sweep_digest` (feature set, head, sweep and eval settings, the space
    file's text, target limit) plus the layer, the dataset root and the seed."""
    from mlt.pipeline import stage_digest, sweep_digest

    root = str(Path(dataset_root).resolve()) if dataset_root is not None else None
    return stage_digest(
        {
            "sweep": sweep_digest(config, set_id),
            "layer": layer,
            "dataset": root,
            "seed": config.seed,
        }
    )


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _live_elsewhere(run) -> bool:
    """Returns True when ``run`` is RUNNING in another live process of this host."""
    host, _, pid = run.data.tags.get(OWNER_TAG, "").rpartition(":")
    if run.info.status != "RUNNING" or host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unfinished_sweep(experiment_id: str, digest: str):
    """Returns the latest sweep run of ``digest`` when it did not finish (to resume), else None."""
    import mlflow

    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`mlt.stage` = 'sweep' and tags.`{INPUTS_TAG}` = '{digest}'",
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list",
    )  # fmt: skip
    if not runs or runs[0].info.status == "FINISHED":
        return None
    if _live_elsewhere(runs[0]):
        print(f"sweep run {runs[0].info.run_id} with the same inputs is running in process "
              f"{runs[0].data.tags[OWNER_TAG]}: starting a new one", flush=True)  # fmt: skip
        return None
    return runs[0]


def _recorded_trials(
    experiment_id: str, parent_id: str, configs: list[HeadConfig], trials: list[dict]
) -> tuple[dict[int, Trial], list[str]]:
    """Returns the trials an earlier run of this sweep recorded ({index: Trial}, rebuilt from
    their FINISHED child runs whose head params match) and the ids of its other child runs."""
    import mlflow

    from mlt.tracking import flatten

    client = mlflow.MlflowClient()
    children = mlflow.search_runs(
        experiment_ids=[experiment_id], output_format="list", order_by=["attributes.start_time ASC"],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and tags.`mlt.stage` = 'sweep-trial'",
    )  # fmt: skip
    done: dict[int, Trial] = {}
    stale: list[str] = []
    for child in children:
        index = child.data.tags.get("mlt.trial.index", "")
        i = int(index) if index.isdigit() else -1
        params = (
            flatten({"head": configs[i].model_dump(mode="json")}) if 0 <= i < len(configs) else None
        )
        if (child.info.status != "FINISHED" or params is None or i in done
                or any(child.data.params.get(k) != v for k, v in params.items())):  # fmt: skip
            stale.append(child.info.run_id)
            continue
        rid, m = child.info.run_id, child.data.metrics
        steps: dict[int, dict] = {}
        for name in HISTORY_KEYS:
            for point in client.get_metric_history(rid, name):
                steps.setdefault(point.step, {"epoch": point.step})[name] = point.value
        done[i] = Trial(
            i, trials[i], configs[i], [steps[e] for e in sorted(steps)], int(m.get("best_epoch", 0)),
            m.get("best_val_mAP", float("nan")), status=child.data.tags.get("mlt.trial.status", "finished"),
            error=child.data.tags.get("mlt.trial.error"), seconds=m.get("trial_seconds", 0.0),
            start=child.info.start_time / 1000, end=(child.info.end_time or 0) / 1000, run_id=rid,
        )  # fmt: skip
    return done, stale


def _log_child(
    parent_id: str, experiment_id: str, t: Trial, tags: dict, head_file: Path | None
) -> str:
    """Records one trial as a nested child run (its head params, per-epoch metrics, outcome,
    and ``head/head.pt`` when given), ended last, so a FINISHED child is complete; returns its id."""
    import mlflow
    from mlflow.entities import Metric, Param

    from mlt import tracking
    from mlt.heads.artifact import ARTIFACT_PATH

    client = mlflow.MlflowClient()
    run_tags = {
        **{k: str(tracking.redact(v)) for k, v in tags.items() if v is not None},
        "mlflow.parentRunId": parent_id, "mlt.stage": "sweep-trial",
        "mlt.trial.index": str(t.index), "mlt.trial.status": t.status,
    }  # fmt: skip
    if t.error:
        run_tags["mlt.trial.error"] = t.error[:5000]
    what = f"trial {t.index} of sweep {parent_id}"
    run = tracking.call(client.create_run, f"create the run of {what}", experiment_id,
                        start_time=int(t.start * 1000), tags=run_tags, run_name=f"trial-{t.index:03d}")  # fmt: skip
    rid = run.info.run_id
    params = [
        Param(k, v) for k, v in tracking.flatten({"head": t.head.model_dump(mode="json")}).items()
    ]
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
    tracking.log_batch(rid, metrics=metrics, params=params)
    if head_file is not None:
        tracking.call(
            client.log_artifact, f"upload head.pt of {what}", rid, str(head_file), ARTIFACT_PATH
        )
    tracking.call(client.set_terminated, f"end the run of {what}", rid,
                  "FAILED" if t.status == "failed" else "FINISHED", end_time=stamp)  # fmt: skip
    return rid


def _check_fault(recorded: int) -> None:
    """Raises once ``recorded`` trials were recorded when ``$MLT_FAULT_STOP_SWEEP`` asks (tests)."""
    limit = os.environ.get(FAULT_ENV)
    if limit and recorded >= int(limit):
        raise RuntimeError(f"{FAULT_ENV}={limit}: sweep stopped after recording {recorded} trials")


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
    trial count and outcomes, how many trials were reused from an interrupted run of the same
    sweep, the training wall time and the heads trained per minute.
    ``space`` and ``batched`` default to ``sweep.space`` and ``sweep.batched``.

    Each trial's child run is recorded as soon as the trial ends. A sweep whose latest run with
    the same inputs (:func:`sweep_inputs_digest`) did not finish resumes it: that parent run
    and its FINISHED child runs are reused, the other children are deleted, and only the
    missing trials are trained (in the batched path, their whole vectorised groups).
    """
    import mlflow
    from mlflow.entities import Param

    from mlt import tracking
    from mlt.heads.artifact import FILE_NAME, save_head
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
    reset_peak()  # the sweep's own peak memory, windows read included
    memory = PeakSampler()
    inputs = prepare_inputs(config, fs_ref, layer, dataset_root)
    tags = lineage_tags(inputs.fs, layer)
    path_name = "batched" if use_batched else "tune"
    effective = config.model_copy(
        update={"sweep": sc.model_copy(update={"space": space_path, "batched": use_batched})}
    )
    digest = sweep_inputs_digest(effective, inputs.fs.id, layer, dataset_root)
    experiment_id = tracking.setup_tracking(config)
    previous = _unfinished_sweep(experiment_id, digest)
    resume_id = previous.info.run_id if previous is not None else None
    with tracking.run(config, f"sweep-{inputs.fs.id[:8]}", "sweep", run_id=resume_id) as parent:
        parent_id = parent.info.run_id
        client = mlflow.MlflowClient()
        done: dict[int, Trial] = {}
        if previous is None:
            tracking.log_config(config, sections=("head", "sweep", "eval"))
            tracking.set_tags(
                {**tags, "mlt.sweep.path": path_name, INPUTS_TAG: digest, OWNER_TAG: _owner()}
            )
            tracking.log_batch(
                params=[Param("sweep.path", path_name), Param("sweep.trials", str(len(configs)))]
            )
            tracking.call(
                mlflow.log_text,
                "upload sweep/space.yaml",
                space_path.read_text(),
                "sweep/space.yaml",
            )
        else:
            tracking.set_tags({OWNER_TAG: _owner()})
            done, stale = _recorded_trials(experiment_id, parent_id, configs, trials_values)
            for rid in stale:  # unfinished, or not this sweep's: retrained below
                tracking.call(client.delete_run, f"delete the unfinished trial run {rid}", rid)
            print(f"resuming sweep {parent_id}: {len(done)} of {len(configs)} trials finished before and "
                  f"are reused, {len(configs) - len(done)} to train"
                  + (f" ({len(stale)} unfinished trial runs deleted)" if stale else ""), flush=True)  # fmt: skip
        reused = len(done)
        best_rank = max((t.rank for t in done.values()), default=None)

        def record(batch: list[Trial]) -> None:
            """Logs the batch's trials not recorded yet as child runs; the one that beats every
            trial recorded so far carries head.pt (so the sweep's best always has it)."""
            nonlocal best_rank
            new = [t for t in batch if t.index not in done]
            top = max(new, key=lambda t: t.rank, default=None)
            for t in new:
                if t is top and t.score > -math.inf and (best_rank is None or t.rank > best_rank):
                    with tempfile.TemporaryDirectory(prefix="mlt-sweep-") as tmp:
                        meta = head_meta(
                            inputs, config.model_copy(update={"head": t.head}), t.best_epoch
                        )
                        head_file = save_head(Path(tmp) / FILE_NAME, _trial_model(t), meta)
                        t.run_id = _log_child(parent_id, experiment_id, t, tags, head_file)
                    best_rank = t.rank
                else:
                    t.run_id = _log_child(parent_id, experiment_id, t, tags, None)
                done[t.index] = t
            _check_fault(len(done) - reused)

        todo = set(range(len(configs))) - set(done)
        start = time.perf_counter()
        if todo:
            train = _run_batched if use_batched else _run_tune
            train(inputs, configs, trials_values, todo, config, progress, record)
        seconds = time.perf_counter() - start
        missing = sorted(set(range(len(configs))) - set(done))
        if missing:
            raise MltError(f"sweep {parent_id}: trials {missing} were not recorded (interrupted?); "
                           "run the same sweep again to resume it")  # fmt: skip
        trials = [done[i] for i in range(len(configs))]
        best = max(trials, key=lambda t: t.rank)
        if best.score == -math.inf:
            raise RuntimeError(
                f"no trial of the sweep produced a validation mAP ({len(trials)} trials)"
            )
        best_id = best.run_id
        model = _trial_model(best)
        classes, k = inputs.classes, config.eval.k
        tables = evaluate_head_forms(model, inputs.val, inputs.val_gt, classes, k)
        tracking.call(
            client.set_tag, f"tag run {best_id} as the best", best_id, "mlt.trial.best", "true"
        )
        for form, table in tables.items():
            tracking.log_metrics(table.to_metrics(f"val_{form}_"), run_id=best_id)
            tracking.call(client.log_text, f"upload the val_{form} table of run {best_id}", best_id,
                          table.format(), f"tables/val_{form}.txt")  # fmt: skip
            tracking.log_metrics(table.to_metrics(f"best_val_{form}_"))
            tracking.call(mlflow.log_text, f"upload the best_val_{form} table", table.format(),
                          f"tables/best_val_{form}.txt")  # fmt: skip
        failed = sum(t.status == "failed" for t in trials)
        trained = len(trials) - reused
        heads_per_minute = 60.0 * trained / seconds if trained and seconds > 0 else float("nan")
        tracking.log_batch(
            params=[Param(f"best.{key}", str(value)) for key, value in best.values.items()]
        )
        best_config = {"trial": best.index, "run_id": best_id, "values": best.values,
                       "head": best.head.model_dump(mode="json")}  # fmt: skip
        tracking.call(
            mlflow.log_dict, "upload sweep/best_config.json", best_config, "sweep/best_config.json"
        )
        tracking.call(
            mlflow.log_text, "upload sweep/trials.txt", _trials_table(trials), "sweep/trials.txt"
        )
        tracking.log_metrics({"best_val_mAP": tables[config.eval.ap].mean_ap, "trials": len(trials), "failed_trials": failed,
                              "reused_trials": reused, "sweep_seconds": seconds, "heads_per_minute": heads_per_minute,
                              **memory_metrics({"rss": peak_rss_bytes(), **memory.stop()})})  # fmt: skip
        tracking.set_tags({"mlt.sweep.best_run": best_id})
        return {
            "parent_run_id": parent_id,
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
            "reused_trials": reused,
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
