"""MLflow at the tracking edge: where runs go, config as params, dataset inputs, lineage tags.

The default tracking URI is a SQLite file in the run folder (``<run_dir>/mlflow.db``) with
artifacts beside it (``<run_dir>/mlartifacts``); ``MLFLOW_TRACKING_URI`` or
``tracking.uri`` in the config switch to a tracking server. mlflow is imported here and
nowhere in the method's core, so the core stays testable without it.

Writes made through this module (:func:`call`, :func:`log_metrics`, :func:`log_batch`, the
params, tags and the run's end) survive a tracking server that goes away for a while: each one
is retried with backoff (0.5 s doubling to 5 s, one HTTP attempt each) for up to
``$MLT_TRACKING_RETRY_S`` seconds (default 300), then the job stops with
:class:`TrackingUnavailable` naming the tracking URI and what was being written. Nothing is
dropped silently. Other errors (a bad parameter, a missing run) are raised at once.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import Metric, Param, RunTag

from mlt.config import RunConfig
from mlt.errors import InputError, MltError

log = logging.getLogger(__name__)
T = TypeVar("T")

_SECRET_KEY = re.compile(r"(password|secret|token|api[_-]?key|credential)", re.IGNORECASE)
_URI_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
MAX_PARAM_LEN = 6000
# mlflow.set_tracking_uri() also exports MLFLOW_TRACKING_URI; URIs we set ourselves must not
# pass for the user's choice when the next stage in this process has another run folder.
_SET_HERE: set[str] = set()

RETRY_ENV = "MLT_TRACKING_RETRY_S"
DEFAULT_RETRY_S = 300.0
_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.5, 5.0
# MLflow's REST client retries by itself for minutes (7 tries, backoff factor 2): inside call()
# each attempt is one HTTP try, so the retry window is ours and bounded.
_MLFLOW_RETRIES, _MLFLOW_TIMEOUT = "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"
_MLFLOW_TIMEOUT_DEFAULT_S = 120
_ENV_LOCK = threading.RLock()
# MLflow error codes of a server that is up but cannot take the request now.
_BUSY_CODES = ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED")
_BUSY_STATUS = re.compile(r"failed with error code (408|429|50[0234])\b")


class TrackingUnavailable(MltError):
    """The tracking server took no write for the whole retry window; the job stops here."""


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


def retry_seconds() -> float:
    """Returns the retry window of tracking writes in seconds: ``$MLT_TRACKING_RETRY_S`` or 300."""
    raw = os.environ.get(RETRY_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise InputError("environment", RETRY_ENV, raw, "a number of seconds >= 0")
    return value


def _transient(err: BaseException) -> bool:
    """Returns True for what a tracking server that is down or overloaded gives: no connection,
    a dropped connection, a timeout, HTTP 408/429/5xx (MLflow's own retry codes; it reports
    them as a RetryError when it makes one attempt), anywhere in the exception chain."""
    import requests
    from mlflow.exceptions import MlflowException

    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, requests.ConnectionError | requests.Timeout | requests.exceptions.RetryError
                      | requests.exceptions.ChunkedEncodingError | ConnectionError | TimeoutError):  # fmt: skip
            return True
        if isinstance(e, MlflowException) and (
            e.error_code in _BUSY_CODES or _BUSY_STATUS.search(e.message or "")
        ):
            return True
        e = e.__cause__ or e.__context__
    return False


@contextmanager
def _one_http_attempt(timeout: float) -> Iterator[None]:
    """Within the block MLflow's REST client makes one attempt per request, timing out after
    ``timeout`` seconds (the user's own MLflow settings are restored afterwards)."""
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in (_MLFLOW_RETRIES, _MLFLOW_TIMEOUT)}
        os.environ[_MLFLOW_RETRIES] = "0"
        os.environ[_MLFLOW_TIMEOUT] = str(max(1, math.ceil(timeout)))
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _short(err: BaseException, limit: int = 300) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def call(
    fn: Callable[..., T], what: str, *args: Any, window: float | None = None, **kwargs: Any
) -> T:
    """Returns ``fn(*args, **kwargs)``, one tracking write, retried while the server is away.

    A lost connection, a timeout or HTTP 408/429/5xx is retried with backoff (0.5 s
    doubling to 5 s) for ``window`` seconds (default :func:`retry_seconds`; 0: one attempt),
    then raises :class:`TrackingUnavailable` naming the tracking URI, ``what`` was being
    written (e.g. "log 12 metrics on run abc") and the last error. Other errors are raised at
    once. ``fn`` must be safe to repeat (MLflow stores a metric with the same key, value,
    step and timestamp once).
    """
    window = retry_seconds() if window is None else window
    deadline = time.monotonic() + window
    delay, attempt = _BACKOFF_FIRST_S, 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            with _one_http_attempt(min(max(remaining, 1.0), _MLFLOW_TIMEOUT_DEFAULT_S)):
                return fn(*args, **kwargs)
        except Exception as e:
            if not _transient(e):
                raise
            uri = redact(mlflow.get_tracking_uri())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TrackingUnavailable(
                    f"MLflow tracking server {uri} did not answer for {window:g} s "
                    f"({attempt} attempts, ${RETRY_ENV}) while trying to {what}; the job stops "
                    f"here rather than drop it: check the server at {uri} (or raise "
                    f"${RETRY_ENV}) and run the job again. Last error: {_short(e)}"
                ) from e
            log.warning(
                "MLflow tracking server %s: %s failed (attempt %d: %s); retrying for up to %.0f s",
                uri, what, attempt, _short(e, 160), remaining,
            )  # fmt: skip
            time.sleep(min(delay, remaining))
            delay = min(2 * delay, _BACKOFF_MAX_S)


def _run_id(run_id: str | None) -> str:
    """Returns ``run_id``, else the active run's id; raises when there is neither."""
    if run_id:
        return run_id
    active = mlflow.active_run()
    if active is None:
        raise MltError("no active MLflow run to log to (start one with tracking.run)")
    return active.info.run_id


def log_batch(
    run_id: str | None = None,
    metrics: Sequence[Metric] = (),
    params: Sequence[Param] = (),
    tags: Sequence[RunTag] = (),
) -> None:
    """Logs metrics, params and tags on a run (the active one by default), in batches the REST
    API takes, each retried per :func:`call`; returns None."""
    run_id = _run_id(run_id)
    client = mlflow.MlflowClient()
    # One REST batch takes at most 1000 entries, of which at most 100 params and 100 tags.
    n = max(math.ceil(len(metrics) / 800), math.ceil(len(params) / 100), math.ceil(len(tags) / 100))
    for b in range(n):
        m, p, t = (
            metrics[b * 800 : (b + 1) * 800],
            params[b * 100 : (b + 1) * 100],
            tags[b * 100 : (b + 1) * 100],
        )
        what = f"log {len(m)} metrics, {len(p)} params, {len(t)} tags on run {run_id}"
        call(client.log_batch, what, run_id, metrics=list(m), params=list(p), tags=list(t))


def log_metrics(
    metrics: Mapping[str, float], step: int | None = None, run_id: str | None = None
) -> None:
    """Logs ``{name: value}`` metrics at ``step`` on a run (the active one by default), all
    stamped with the same time, retried per :func:`call`; returns None."""
    stamp = int(time.time() * 1000)
    log_batch(run_id, [Metric(k, float(v), stamp, step or 0) for k, v in metrics.items()])


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
    log_batch(params=[Param(k, v) for k, v in params.items()])
    return params


def log_dataset(name: str, digest: str, source: str | Path, context: str) -> None:
    """Logs a dataset input (name, digest, location) on the active run; returns None."""
    ds = MetaDataset(LocalArtifactDatasetSource(str(source)), name=name, digest=digest[:36])
    mlflow.log_input(ds, context=context)


def set_tags(tags: Mapping[str, Any]) -> None:
    """Sets string tags on the active run (secrets redacted), retried per :func:`call`; returns None."""
    clean = {
        k: "***" if _SECRET_KEY.search(str(k)) else str(redact(v))
        for k, v in tags.items()
        if v is not None
    }
    call(mlflow.set_tags, f"set {len(clean)} tags on the active run", clean)


@contextmanager
def run(
    config: RunConfig,
    run_name: str,
    stage: str,
    run_id: str | None = None,
    system_metrics: bool = True,
) -> Iterator[mlflow.ActiveRun]:
    """Yields an active MLflow run for ``stage`` (resuming ``run_id`` when given).

    The run ends FINISHED, or FAILED when the block raises. Ending it is retried like every
    write (:func:`call`); when the block failed because the server is gone, one attempt is
    made, so the error the user sees is the job's own.
    """
    setup_tracking(config)
    kwargs: dict[str, Any] = {"run_id": run_id} if run_id else {"run_name": run_name}
    active = mlflow.start_run(log_system_metrics=system_metrics, **kwargs)
    try:
        if not run_id:
            set_tags({"mlt.stage": stage, "mlt.config_name": config.name})
        yield active
    except BaseException as e:
        _end_run(active.info.run_id, "FAILED", failing=e)
        raise
    _end_run(active.info.run_id, "FINISHED")


def _end_run(run_id: str, status: str, failing: BaseException | None = None) -> None:
    """Ends run ``run_id`` with ``status`` and drops it from the active runs; returns None.

    Raises :class:`TrackingUnavailable` when the server does not take it, unless the run is
    ending because of ``failing`` (then a warning: the caller re-raises its own error).
    """

    popped = False

    def end() -> None:
        nonlocal popped
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            popped = True
            mlflow.end_run(status)  # pops it first, then tells the server
        elif popped:  # an earlier attempt popped it but did not reach the server
            mlflow.MlflowClient().set_terminated(run_id, status)
        # else: the block ended the run itself, as mlflow's own ActiveRun leaves it

    window = 0.0 if isinstance(failing, TrackingUnavailable) else None
    try:
        call(end, f"end run {run_id} as {status}", window=window)
    except Exception as e:
        if failing is None:
            raise
        log.warning("run %s could not be marked %s: %s", run_id, status, _short(e))
