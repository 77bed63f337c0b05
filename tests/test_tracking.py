"""Where MLflow runs go: the config, the user's MLFLOW_TRACKING_URI, else the run folder."""

from __future__ import annotations

from pathlib import Path

import mlflow

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
