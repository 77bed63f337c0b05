"""Where MLflow runs go: the config, the user's MLFLOW_TRACKING_URI, else the run folder."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import mlflow
import pytest

from mlt import tracking
from mlt.config import load_config


def test_each_run_folder_gets_its_own_sqlite_even_after_set_tracking_uri(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    a = load_config(None, [f"run_dir={tmp_path / 'a'}"])
    b = load_config(None, [f"run_dir={tmp_path / 'b'}"])
    tracking.setup_tracking(a)  # mlflow exports MLFLOW_TRACKING_URI here
    assert tracking.tracking_uri(b) == f"sqlite:///{(tmp_path / 'b' / 'mlflow.db').resolve()}"
    tracking.setup_tracking(b)
    assert mlflow.get_tracking_uri() == tracking.tracking_uri(b)


def test_user_env_and_config_win(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert (
        tracking.tracking_uri(load_config(None, [f"run_dir={tmp_path}"])) == "http://127.0.0.1:5999"
    )
    cfg = load_config(None, [f"run_dir={tmp_path}", "tracking.uri=sqlite:///x.db"])
    assert tracking.tracking_uri(cfg) == "sqlite:///x.db"


def test_params_are_flattened_and_secrets_redacted() -> None:
    flat = tracking.flatten(
        {"a": {"b": 1, "api_key": "s3cret"}, "uri": "http://user:pw@host:5000/x"}
    )
    assert flat == {"a.b": "1", "a.api_key": "***", "uri": "http://***@host:5000/x"}


def test_the_users_tracking_uri_holds_for_every_later_stage(tmp_path, monkeypatch) -> None:
    from mlt import tracking
    from mlt.config import load_config

    user = f"sqlite:///{tmp_path / 'user.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", user)
    config = load_config(None, [f"run_dir={tmp_path / 'runs'}"])
    assert tracking.setup_tracking(config) and tracking.tracking_uri(config) == user
    assert tracking.setup_tracking(config) and tracking.tracking_uri(config) == user


# -- the tracking server goes away --------------------------------------------------------------


def test_writes_retry_transient_errors_then_name_the_uri(monkeypatch) -> None:
    import requests

    from mlt.errors import InputError

    monkeypatch.setenv(tracking.RETRY_ENV, "1.2")
    calls = []

    def flaky(n_failures: int):
        calls.append(1)
        if len(calls) <= n_failures:
            raise requests.ConnectionError("connection refused")
        return "ok"

    assert tracking.call(flaky, "log a metric", 2) == "ok" and len(calls) == 3
    calls.clear()
    start = time.monotonic()
    with pytest.raises(tracking.TrackingUnavailable) as err:
        tracking.call(flaky, "log a metric", 99)
    assert 1.2 <= time.monotonic() - start < 5 and len(calls) >= 2
    message = str(err.value)
    assert mlflow.get_tracking_uri() in message and "log a metric" in message
    assert tracking.RETRY_ENV in message and "connection refused" in message

    def refused() -> None:
        calls.append(1)
        raise ValueError("not a tracking outage")

    calls.clear()
    with pytest.raises(ValueError, match="not a tracking outage"):  # other errors: at once
        tracking.call(refused, "log a metric")
    assert len(calls) == 1
    monkeypatch.setenv(tracking.RETRY_ENV, "soon")
    with pytest.raises(InputError, match=f"field '{tracking.RETRY_ENV}'.*'soon'"):
        tracking.call(flaky, "log a metric", 0)


class _Server:
    """An ``mlflow server`` (``mlt.registry.server.start_server``) that can be stopped and
    started again on the same port and store."""

    def __init__(self, tmp: Path) -> None:
        from mlt.registry.server import start_server

        self._start = start_server
        self.backend, self.artifacts = f"sqlite:///{tmp / 'mlflow.db'}", tmp / "artifacts"
        self.server = start_server(self.backend, self.artifacts, timeout=300)

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        """Stops the server and waits until its port refuses connections (the web server is a
        child of ``mlflow server`` and finishes its shutdown on its own)."""
        self.server.stop()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.server.port), timeout=1).close()
            except OSError:
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.url} still accepts connections after stop()")

    def ensure_running(self) -> None:
        if not self.server.running():
            self.server = self._start(self.backend, self.artifacts, port=self.server.port, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = _Server(tmp_path_factory.mktemp("mlflow-away"))
    yield srv
    srv.stop()


def _job(config, on_step: dict) -> str:
    """Logs two metrics for steps 0..9 through mlt.tracking, calling ``on_step[step]()`` first;
    returns the run id."""
    with tracking.run(config, "job", "test", system_metrics=False) as active:
        for step in range(10):
            if step in on_step:
                on_step[step]()
            tracking.log_metrics({"loss": 1.0 / (step + 1), "step": float(step)}, step=step)
    return active.info.run_id


@pytest.mark.slow
def test_a_server_back_within_the_retry_window_loses_no_metric(
    server, tmp_path, monkeypatch, caplog
) -> None:
    server.ensure_running()
    monkeypatch.setenv(tracking.RETRY_ENV, "300")
    config = load_config(None, [f"run_dir={tmp_path}", f"tracking.uri={server.url}"])
    restart = threading.Thread(target=server.ensure_running)

    def away() -> None:
        server.stop()
        restart.start()  # takes seconds: the next writes wait for it

    with caplog.at_level(logging.WARNING, "mlt.tracking"):
        run_id = _job(config, {4: away})
    restart.join()
    assert "retrying" in caplog.text and server.url in caplog.text
    client = mlflow.MlflowClient(server.url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    history = sorted(client.get_metric_history(run_id, "loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(s, 1.0 / (s + 1)) for s in range(10)]
    assert len(client.get_metric_history(run_id, "step")) == 10


@pytest.mark.slow
def test_a_server_that_stays_away_fails_the_job_naming_it(server, tmp_path, monkeypatch) -> None:
    server.ensure_running()
    monkeypatch.setenv(tracking.RETRY_ENV, "2")
    config = load_config(None, [f"run_dir={tmp_path}", f"tracking.uri={server.url}"])
    stopped: list[float] = []

    def away() -> None:
        server.stop()
        stopped.append(time.monotonic())

    with pytest.raises(tracking.TrackingUnavailable) as err:
        _job(config, {4: away})
    # bounded by the 2 s window (MLflow alone would retry for minutes); generous for a loaded machine
    assert time.monotonic() - stopped[0] < 90
    message = str(err.value)
    assert server.url in message and tracking.RETRY_ENV in message
    assert "log 2 metrics, 0 params, 0 tags on run" in message
    assert mlflow.active_run() is None  # the job's run is no longer the active one
