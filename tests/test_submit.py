"""`mlt submit` / `mlt jobs`: runtime_env, entrypoints, addresses and auth, and a real job on a
loopback Ray head (cluster/local.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trunkfixture import tiny_trunk
from vocfixture import small_voc

from mlt.cli import main
from mlt.errors import InputError
from mlt.submit import (
    DEFAULT_EXCLUDES,
    FORWARD_ENV,
    STAGES,
    SubmitError,
    auth_headers,
    available_stages,
    build_runtime_env,
    parse_env,
    pinned_requirements,
    project_root,
    resolve_address,
    stage_entrypoint,
)

REPO = Path(__file__).resolve().parents[1]


def _load_local():
    """Returns cluster/local.py as a module (cluster/ is not an installed package)."""
    name = "mlt_cluster_local"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "cluster" / "local.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _fake_project(tmp_path: Path, stages=("extract",)) -> Path:
    root = tmp_path / "proj"
    (root / "jobs").mkdir(parents=True)
    (root / "configs").mkdir()
    (root / "configs" / "c.yaml").write_text("name: x\n")
    (root / "pyproject.toml").write_text(
        '[project]\nname = "p"\nversion = "0"\ndependencies = ["torch==2.13.0", "ray[default,train]==2.60.0", "pyyaml>=6"]\n'
    )
    for s in stages:
        (root / "jobs" / f"{s}.py").write_text("")
    return root


# -- runtime_env ------------------------------------------------------------------------------


def test_runtime_env_ships_the_project_without_local_state(tmp_path) -> None:
    root = _fake_project(tmp_path)
    env = build_runtime_env(root, environ={})
    assert env["working_dir"] == str(root.resolve())
    for pattern in (".git", ".venv", "/runs/"):
        assert pattern in env["excludes"]
    assert env["excludes"] == list(DEFAULT_EXCLUDES)
    assert env["env_vars"] == {"PYTHONUNBUFFERED": "1"}
    assert "pip" not in env


def test_runtime_env_forwards_tracking_and_store_variables_only(tmp_path) -> None:
    root = _fake_project(tmp_path)
    environ = {
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "MLT_FEATURE_STORE": "/shared/features",
        "MLFLOW_TRACKING_PASSWORD": "secret",  # never implicitly
        "RAY_AUTH_TOKEN": "tok",  # never
        "HOME": "/root",
        "MLT_DATA": "",  # empty: not forwarded
    }
    env = build_runtime_env(root, env={"MLT_DATA": "/shared/data", "X": "1"}, environ=environ)
    assert env["env_vars"] == {
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "MLT_FEATURE_STORE": "/shared/features",
        "MLT_DATA": "/shared/data",
        "X": "1",
    }
    assert "MLFLOW_TRACKING_URI" in FORWARD_ENV
    # --env wins over the forwarded value
    env = build_runtime_env(root, env={"MLFLOW_TRACKING_URI": "file:///x"}, environ=environ)
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] == "file:///x"


def test_runtime_env_pip_holds_the_pinned_requirements(tmp_path) -> None:
    root = _fake_project(tmp_path)
    env = build_runtime_env(root, pip=True, environ={})
    assert env["pip"] == {
        "packages": ["torch==2.13.0", "ray[default,train]==2.60.0", "pyyaml>=6"],
        "pip_check": False,
    }
    assert pinned_requirements(REPO / "pyproject.toml")[0].startswith("torch==")


def test_runtime_env_rejects_a_missing_working_dir(tmp_path) -> None:
    with pytest.raises(InputError, match="--working-dir"):
        build_runtime_env(tmp_path / "nope", environ={})


def test_parse_env() -> None:
    assert parse_env(["A=1", "B=x=y", "A=2", "C="]) == {"A": "2", "B": "x=y", "C": ""}
    for bad in ("A", "=1", "1A=2", "A B=1"):
        with pytest.raises(InputError, match="--env"):
            parse_env([bad])


# -- entrypoints --------------------------------------------------------------------------------


def test_stage_entrypoint_runs_the_jobs_module_with_a_relative_config(
    tmp_path, monkeypatch
) -> None:
    root = _fake_project(tmp_path)
    monkeypatch.chdir(root)
    cmd = stage_entrypoint(
        "extract", root, "configs/c.yaml", ["--trunk", "r 1", "extract.workers=2"]
    )
    assert shlex.split(cmd) == [
        "python", "-m", "jobs.extract", "--config", "configs/c.yaml",
        "--trunk", "r 1", "extract.workers=2",
    ]  # fmt: skip
    # an absolute path inside the project is made relative (it is uploaded with the job)
    cmd = stage_entrypoint("extract", root, root / "configs" / "c.yaml")
    assert cmd == "python -m jobs.extract --config configs/c.yaml"


def test_stage_entrypoint_errors_name_what_is_wrong(tmp_path) -> None:
    root = _fake_project(tmp_path)
    with pytest.raises(
        SubmitError,
        match=r"stage 'sweep' has no job entrypoint yet: .*jobs/sweep.py is missing \(stages with one: extract\)",
    ):
        stage_entrypoint("sweep", root)  # fmt: skip
    with pytest.raises(InputError, match="STAGE"):
        stage_entrypoint("bogus", root)
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text("name: y\n")
    with pytest.raises(InputError, match="inside the job's working dir"):
        stage_entrypoint("extract", root, outside)
    with pytest.raises(InputError, match="an existing YAML run config"):
        stage_entrypoint("extract", root, root / "configs" / "missing.yaml")


def test_project_stages_and_root() -> None:
    assert project_root(REPO / "mlt" / "cli") == REPO
    have = available_stages(REPO)
    assert {"pretrain", "extract"} <= set(have) <= set(STAGES)


# -- addresses and auth ---------------------------------------------------------------------------


def test_resolve_address_order_and_errors() -> None:
    env = {"RAY_API_SERVER_ADDRESS": "http://a:8265/", "RAY_ADDRESS": "http://b:8265"}
    assert resolve_address("http://c:8265", env) == "http://c:8265"
    assert resolve_address(None, env) == "http://a:8265"
    assert resolve_address(None, {"RAY_ADDRESS": "https://b:443"}) == "https://b:443"
    with pytest.raises(SubmitError, match="no Ray job server address"):
        resolve_address(None, {"RAY_ADDRESS": "10.0.0.1:6379"})  # a GCS address is not a job server
    with pytest.raises(InputError, match="http://HEAD:8265"):
        resolve_address("10.0.0.1:6379", {})


def test_auth_headers_follow_ray_auth_mode(tmp_path) -> None:
    token_file = tmp_path / "tok"
    token_file.write_text("abc\n")
    assert auth_headers({"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "x"}) == {}
    assert auth_headers({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "x"}) == {
        "Authorization": "Bearer x"
    }
    assert auth_headers({"RAY_AUTH_TOKEN_PATH": str(token_file)}) == {"Authorization": "Bearer abc"}
    missing = {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")}
    assert auth_headers(missing) == {}  # mode unset, no token: no header
    with pytest.raises(SubmitError, match="RAY_AUTH_MODE=token but no token"):
        auth_headers({**missing, "RAY_AUTH_MODE": "token"})
    with pytest.raises(InputError, match="RAY_AUTH_MODE"):
        auth_headers({"RAY_AUTH_MODE": "sometimes"})


def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(REPO)
    assert main(["submit", "extract"]) == 2
    assert "no Ray job server address" in capsys.readouterr().err
    assert main(["submit", "promote", "--address", "http://127.0.0.1:9"]) in (0, 2)
    err = capsys.readouterr().err
    if "promote" in available_stages(REPO):  # the lead adds jobs/promote.py later
        assert "cannot use the Ray job server" in err
    else:
        assert "stage 'promote' has no job entrypoint yet" in err
    assert main(["jobs", "status", "x", "--address", "http://127.0.0.1:9"]) == 2
    assert "cannot use the Ray job server at http://127.0.0.1:9" in capsys.readouterr().err


# -- the local head -----------------------------------------------------------------------------


def test_local_head_free_ports_are_distinct() -> None:
    ports = _load_local().free_ports(9)
    assert len(set(ports)) == 9 and all(p > 0 for p in ports)


@pytest.mark.slow
def test_submit_extract_to_a_local_head(tmp_path) -> None:
    """Start a loopback head, `mlt submit extract --wait` a tiny extraction, check its feature
    set and MLflow run, then list/status/logs; the head is stopped whatever happens."""
    local = _load_local()
    root = small_voc(tmp_path / "voc")
    ckpt = tiny_trunk(tmp_path / "trunk.pt")
    store, mlflow_db = tmp_path / "store", tmp_path / "mlflow.db"
    t0 = time.monotonic()
    with local.local_head(num_cpus=2) as head:
        t_up = time.monotonic() - t0
        assert local.status(head)["job_server_up"]
        assert (Path(head.temp_dir) / "ray_current_cluster").exists()
        env = {
            **os.environ,
            **head.env(),  # RAY_API_SERVER_ADDRESS and RAY_AUTH_MODE, as a user exports them
            "MLFLOW_TRACKING_URI": f"sqlite:///{mlflow_db}",  # forwarded to the job
        }
        env.pop("RAY_ADDRESS", None)
        mlt = [str(Path(sys.executable).parent / "mlt")]
        cmd = [*mlt, "submit", "extract", "--wait", "--timeout", "600",
               "--env", "MLT_TEST_MARK=1", "--",
               "--trunk", str(ckpt), "--dataset", str(root), "--no-progress",
               f"run_dir={tmp_path / 'runs'}", f"extract.store={store}",
               "data.train_split=trainval", "extract.workers=1", "extract.backend=reference"]  # fmt: skip
        t1 = time.monotonic()
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
        t_job = time.monotonic() - t1
        job_id = proc.stdout.splitlines()[0] if proc.stdout else ""
        assert proc.returncode == 0, (
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
        assert job_id.startswith("mlt-extract-")
        assert f"job {job_id}: SUCCEEDED" in proc.stderr
        assert "feature set" in proc.stdout  # the job's own output, streamed back

        status = subprocess.run([*mlt, "jobs", "status", job_id], env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        info = json.loads(status.stdout)
        assert info["status"] == "SUCCEEDED"
        assert info["metadata"]["mlt_stage"] == "extract"
        assert info["entrypoint"].startswith("python -m jobs.extract --trunk ")
        assert {"MLFLOW_TRACKING_URI", "MLT_TEST_MARK"} <= set(info["runtime_env"]["env_vars"])
        listed = subprocess.run([*mlt, "jobs", "list"], env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout
        logs = subprocess.run([*mlt, "jobs", "logs", job_id], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert "feature set" in logs.stdout
    # stopped: nothing of the head is left, nor its address file
    assert not local.status(head)["running"]
    assert not Path(head.temp_dir, "ray_current_cluster").exists()

    from featurestore import FeatureStore

    sets = FeatureStore(store).list(include_partial=False)
    assert len(sets) == 1
    fs = FeatureStore(store).open(sets[0].id)
    assert fs.verify() == [] and len(fs.image_ids()) == 7

    import mlflow

    def featureset_runs(db: Path) -> list:
        c = mlflow.MlflowClient(f"sqlite:///{db}")
        runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
        return [r for r in runs if r.data.tags.get("mlt.featureset.id") == sets[0].id]

    print(f"head up in {t_up:.1f} s, job submitted and finished in {t_job:.1f} s")
    # the forwarded MLFLOW_TRACKING_URI reached the job: its experiment is in that database
    assert mlflow.MlflowClient(f"sqlite:///{mlflow_db}").get_experiment_by_name("mlt") is not None
    assert len(featureset_runs(mlflow_db)) == 1  # and the run went there too, not to runs/
