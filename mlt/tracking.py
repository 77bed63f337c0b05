"""MLflow at the tracking edge: where runs go, config as params, dataset inputs, lineage tags.

The default tracking URI is a SQLite file in the run folder (``<run_dir>/mlflow.db``) with
artifacts beside it (``<run_dir>/mlartifacts``); ``MLFLOW_TRACKING_URI`` or
``tracking.uri`` in the config switch to a tracking server. mlflow is imported here and
nowhere in the method's core, so the core stays testable without it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource

from mlt.config import RunConfig

_SECRET_KEY = re.compile(r"(password|secret|token|api[_-]?key|credential)", re.IGNORECASE)
_URI_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
MAX_PARAM_LEN = 6000
# mlflow.set_tracking_uri() also exports MLFLOW_TRACKING_URI; URIs we set ourselves must not
# pass for the user's choice when the next stage in this process has another run folder.
_SET_HERE: set[str] = set()


def tracking_uri(config: RunConfig) -> str:
    """Returns the tracking URI: config, else $MLFLOW_TRACKING_URI, else SQLite in the run folder."""
    if config.tracking.uri:
        return config.tracking.uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env not in _SET_HERE:
        return env
    run_dir = Path(config.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{run_dir / 'mlflow.db'}"


def setup_tracking(config: RunConfig) -> str:
    """Points mlflow at the config's tracking URI and experiment; returns the experiment id.

    A new experiment on the local SQLite default keeps its artifacts in ``<run_dir>/mlartifacts``.
    """
    uri = tracking_uri(config)
    if uri != os.environ.get("MLFLOW_TRACKING_URI"):
        _SET_HERE.add(uri)  # ours, not the user's: mlflow is about to export it
    mlflow.set_tracking_uri(uri)
    name = config.tracking.experiment
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        mlflow.set_experiment(experiment_id=exp.experiment_id)
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(config.run_dir).resolve() / "mlartifacts").as_uri()
    exp_id = mlflow.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def redact(value: Any) -> Any:
    """Returns ``value`` with credentials removed from URIs (``scheme://user:pw@host`` → ``scheme://***@host``)."""
    if isinstance(value, str):
        return _URI_USERINFO.sub(r"\g<scheme>***@", value)
    return value


def flatten(data: Mapping, prefix: str = "") -> dict[str, str]:
    """Returns a nested mapping flattened to ``{"a.b": "value"}`` strings, secrets redacted."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif _SECRET_KEY.search(str(key)):
            out[name] = "***"
        else:
            out[name] = str(redact(value))[:MAX_PARAM_LEN]
    return out


def log_config(config: RunConfig, sections: tuple[str, ...] | None = None) -> dict[str, str]:
    """Logs the config (or the given sections) as run params; returns what was logged."""
    data = config.model_dump(mode="json")
    if sections is not None:
        data = {k: v for k, v in data.items() if k in sections or not isinstance(v, dict)}
    params = flatten(data)
    items = list(params.items())
    for i in range(0, len(items), 100):  # the REST API takes at most 100 params per batch
        mlflow.log_params(dict(items[i : i + 100]))
    return params


def log_dataset(name: str, digest: str, source: str | Path, context: str) -> None:
    """Logs a dataset input (name, digest, location) on the active run; returns None."""
    ds = MetaDataset(LocalArtifactDatasetSource(str(source)), name=name, digest=digest[:36])
    mlflow.log_input(ds, context=context)


def set_tags(tags: Mapping[str, Any]) -> None:
    """Sets string tags on the active run (secrets redacted); returns None."""
    mlflow.set_tags(
        {
            k: "***" if _SECRET_KEY.search(str(k)) else str(redact(v))
            for k, v in tags.items()
            if v is not None
        }
    )


@contextmanager
def run(
    config: RunConfig,
    run_name: str,
    stage: str,
    run_id: str | None = None,
    system_metrics: bool = True,
) -> Iterator[mlflow.ActiveRun]:
    """Yields an active MLflow run for ``stage`` (resuming ``run_id`` when given)."""
    setup_tracking(config)
    kwargs: dict[str, Any] = {"run_id": run_id} if run_id else {"run_name": run_name}
    with mlflow.start_run(log_system_metrics=system_metrics, **kwargs) as active:
        if not run_id:
            set_tags({"mlt.stage": stage, "mlt.config_name": config.name})
        yield active
