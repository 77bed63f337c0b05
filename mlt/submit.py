"""Stages as Ray jobs: submit one to a cluster's job server, follow it, stop it.

A stage runs as ``python -m jobs.<stage> [--config FILE] [ARGS...]`` with the project folder
as the job's ``working_dir`` (uploaded by Ray, without ``.git``, ``.venv``, ``runs/`` and other
local state), the tracking and store variables of this shell forwarded (``FORWARD_ENV``) plus
any ``--env K=V``, and optionally the project's pinned requirements as a ``pip`` runtime env
(clusters built from the project's Dockerfile already have them).

The job server address is ``--address``, else ``$RAY_API_SERVER_ADDRESS``, else
``$RAY_ADDRESS`` when it is an ``http(s)://`` URL. Token auth follows Ray's variables:
``RAY_AUTH_MODE`` (``token`` | ``disabled``) and the token from ``$RAY_AUTH_TOKEN``,
``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``; with ``RAY_AUTH_MODE`` unset the token is
sent when there is one (Ray enables token auth by default when a token exists).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shlex
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from mlt import __version__
from mlt.errors import InputError, MltError

STAGES = ("pretrain", "extract", "sweep", "evaluate", "promote", "pipeline")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# gitignore-style patterns, relative to the working dir (Ray also honours .gitignore/.rayignore)
DEFAULT_EXCLUDES = (
    ".git",
    ".venv",
    "/runs/",
    "/data/",
    "mlruns/",
    "mlartifacts/",
    "__pycache__/",
    "*.pyc",
    "*.egg-info/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".hypothesis/",
    ".mypy_cache/",
    "*.mdb",
    "mlflow.db",
)
# variables of the submitting shell a stage needs on the cluster (secrets go through --env or
# the cluster's own configuration, never implicitly)
FORWARD_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLT_DATA",
    "MLT_FEATURE_STORE",
    "MLT_DOWNLOAD_MIRROR",
)
ADDRESS_ENV = "RAY_API_SERVER_ADDRESS"
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SubmitError(MltError):
    """A job could not be submitted, found or followed; the message says what to do."""


def project_root(start: Path | None = None) -> Path:
    """Returns the project folder to ship as the job's working dir: the nearest folder at or
    above ``start`` (default: the current one) holding ``pyproject.toml`` and ``jobs/``, else the
    folder the installed ``mlt`` package lives in."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "jobs").is_dir():
            return folder
    pkg_parent = Path(__file__).resolve().parents[1]
    if (pkg_parent / "jobs").is_dir():
        return pkg_parent
    raise SubmitError(
        f"no project folder (pyproject.toml and jobs/) at or above {here}: "
        "run from the project or pass --working-dir"
    )


def available_stages(working_dir: Path) -> list[str]:
    """Returns the stages that have a job entrypoint (``jobs/<stage>.py``) in ``working_dir``."""
    return [s for s in STAGES if (Path(working_dir) / "jobs" / f"{s}.py").is_file()]


def stage_entrypoint(
    stage: str,
    working_dir: Path,
    config: str | os.PathLike | None = None,
    args: Iterable[str] = (),
) -> str:
    """Returns the shell command a stage runs as on the cluster (``python -m jobs.<stage> …``).

    ``config`` must be a file inside ``working_dir`` (it travels with the job); it is passed
    relative to it.
    """
    working_dir = Path(working_dir).resolve()
    if stage not in STAGES:
        raise InputError(None, "STAGE", stage, f"one of {', '.join(STAGES)}")
    module = working_dir / "jobs" / f"{stage}.py"
    if not module.is_file():
        have = ", ".join(available_stages(working_dir)) or "none"
        raise SubmitError(
            f"stage '{stage}' has no job entrypoint yet: {module} is missing "
            f"(stages with one: {have})"
        )
    argv = ["python", "-m", f"jobs.{stage}"]
    if config is not None:
        path = Path(config)
        path = (path if path.is_absolute() else Path.cwd() / path).resolve()
        if not path.is_file():
            raise InputError(path, "--config", str(config), "an existing YAML run config file")
        try:
            rel = path.relative_to(working_dir)
        except ValueError:
            raise InputError(
                path, "--config", str(config),
                f"a file inside the job's working dir {working_dir} (it is uploaded with the job)",
            ) from None  # fmt: skip
        argv += ["--config", rel.as_posix()]
    argv += list(args)
    return shlex.join(argv)


def parse_env(pairs: Iterable[str]) -> dict[str, str]:
    """Returns ``K=V`` strings as a dict (later ones win); a malformed one is an InputError."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not _ENV_KEY.match(key):
            raise InputError(None, "--env", pair, "KEY=VALUE with KEY a valid variable name")
        out[key] = value
    return out


def pinned_requirements(pyproject: Path) -> list[str]:
    """Returns the project's runtime dependencies exactly as ``pyproject.toml`` lists them."""
    try:
        data = tomllib.loads(Path(pyproject).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InputError(pyproject, None, str(e), "a readable pyproject.toml") from None
    deps = data.get("project", {}).get("dependencies")
    if not deps:
        raise InputError(pyproject, "project.dependencies", deps, "a non-empty list")
    return list(deps)


def build_runtime_env(
    working_dir: Path,
    env: Mapping[str, str] | None = None,
    pip: bool = False,
    excludes: Iterable[str] = DEFAULT_EXCLUDES,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Returns the job's runtime_env: working_dir and excludes, env_vars (``FORWARD_ENV`` from
    ``environ`` — default ``os.environ`` — then ``env``), and with ``pip`` the pinned
    requirements of the working dir's ``pyproject.toml``."""
    environ = os.environ if environ is None else environ
    working_dir = Path(working_dir).resolve()
    if not working_dir.is_dir():
        raise InputError(working_dir, "--working-dir", str(working_dir), "an existing folder")
    env_vars = {"PYTHONUNBUFFERED": "1"}
    env_vars.update({k: environ[k] for k in FORWARD_ENV if environ.get(k)})
    env_vars.update(env or {})
    runtime_env: dict[str, Any] = {
        "working_dir": str(working_dir),
        "excludes": list(excludes),
        "env_vars": env_vars,
    }
    if pip:
        runtime_env["pip"] = {
            "packages": pinned_requirements(working_dir / "pyproject.toml"),
            "pip_check": False,
        }
    return runtime_env


def resolve_address(address: str | None, environ: Mapping[str, str] | None = None) -> str:
    """Returns the job server URL: ``address``, ``$RAY_API_SERVER_ADDRESS``, or an http(s)
    ``$RAY_ADDRESS``; an error that says what to pass when there is none."""
    environ = os.environ if environ is None else environ
    candidates = [
        ("--address", address),
        (f"${ADDRESS_ENV}", environ.get(ADDRESS_ENV)),
        ("$RAY_ADDRESS", environ.get("RAY_ADDRESS")),
    ]
    for source, value in candidates:
        if not value:
            continue
        if value.startswith(("http://", "https://")):
            return value.rstrip("/")
        if source != "$RAY_ADDRESS":
            raise InputError(None, source, value, "the job server URL, e.g. http://HEAD:8265")
    raise SubmitError(
        f"no Ray job server address: pass --address http://HEAD:8265 or set ${ADDRESS_ENV} "
        "(`python -m cluster.local start` prints one for a local head)"
    )


def auth_headers(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Returns the Authorization header for Ray token auth, or {} when auth is disabled."""
    environ = os.environ if environ is None else environ
    mode = (environ.get("RAY_AUTH_MODE") or "").lower()
    if mode == "disabled":
        return {}
    if mode not in ("", "token"):
        raise InputError(None, "RAY_AUTH_MODE", mode, "token or disabled")
    token = environ.get("RAY_AUTH_TOKEN", "").strip()
    path = Path(environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not token and path.is_file():
        token = path.read_text().strip()
    if not token:
        if mode == "token":
            raise SubmitError(
                f"RAY_AUTH_MODE=token but no token: set RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
                f"write the cluster's token to {path} (`ray get-auth-token` on the head prints it)"
            )
        return {}
    return {"Authorization": f"Bearer {token}"}


def client(address: str | None = None):
    """Returns a JobSubmissionClient connected to the job server (see ``resolve_address``)."""
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    try:
        return JobSubmissionClient(url, headers=auth_headers())
    except (ConnectionError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SubmitError(
            f"cannot use the Ray job server at {url}: {first} "
            "(is the head up? does RAY_AUTH_MODE match the cluster's?)"
        ) from None


def new_submission_id(stage: str) -> str:
    """Returns a readable unique submission id such as ``mlt-extract-20260101-120000-a1b2``."""
    return f"mlt-{stage}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def submit(
    stage: str,
    address: str | None = None,
    config: str | os.PathLike | None = None,
    args: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    working_dir: Path | None = None,
    pip: bool = False,
    submission_id: str | None = None,
    entrypoint_num_cpus: float | None = None,
    entrypoint_num_gpus: float | None = None,
) -> str:
    """Submits a stage as a Ray job; returns its submission id."""
    working_dir = Path(working_dir).resolve() if working_dir else project_root()
    entrypoint = stage_entrypoint(stage, working_dir, config, args)
    runtime_env = build_runtime_env(working_dir, env, pip=pip)
    jobs = client(address)
    try:
        return jobs.submit_job(
            entrypoint=entrypoint,
            runtime_env=runtime_env,
            submission_id=submission_id or new_submission_id(stage),
            metadata={"mlt_stage": stage, "mlt_version": __version__},
            entrypoint_num_cpus=entrypoint_num_cpus,
            entrypoint_num_gpus=entrypoint_num_gpus,
        )
    except RuntimeError as e:
        raise SubmitError(f"the job server refused the {stage} job: {e}") from None


def _details(info: Any) -> dict[str, Any]:
    runtime_env = dict(info.runtime_env or {})
    if "env_vars" in runtime_env:  # values may be secrets passed with --env
        runtime_env["env_vars"] = sorted(runtime_env["env_vars"])
    return {
        "submission_id": info.submission_id,
        "status": str(getattr(info.status, "value", info.status)),
        "message": info.message,
        "entrypoint": info.entrypoint,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "metadata": info.metadata,
        "driver_exit_code": getattr(info, "driver_exit_code", None),
        "runtime_env": runtime_env,
    }


def job_info(job_id: str, address: str | None = None, jobs=None) -> dict[str, Any]:
    """Returns a job's status, message, entrypoint, times and metadata as a dict."""
    jobs = jobs or client(address)
    try:
        return _details(jobs.get_job_info(job_id))
    except RuntimeError as e:
        raise SubmitError(f"job {job_id}: {e}") from None


def list_jobs(address: str | None = None) -> list[dict[str, Any]]:
    """Returns every job the cluster knows, oldest first, as dicts (see ``job_info``)."""
    jobs = client(address).list_jobs()
    return sorted((_details(j) for j in jobs), key=lambda d: d["start_time"] or 0)


def job_logs(job_id: str, address: str | None = None) -> str:
    """Returns the job's logs so far."""
    try:
        return client(address).get_job_logs(job_id)
    except RuntimeError as e:
        raise SubmitError(f"job {job_id}: {e}") from None


def stop_job(job_id: str, address: str | None = None) -> bool:
    """Asks the cluster to stop a job; returns False when it had already finished."""
    try:
        return client(address).stop_job(job_id)
    except RuntimeError as e:
        raise SubmitError(f"job {job_id}: {e}") from None


def wait(
    job_id: str,
    address: str | None = None,
    timeout: float | None = None,
    poll: float = 2.0,
    jobs=None,
) -> dict[str, Any]:
    """Polls until the job is SUCCEEDED, FAILED or STOPPED; returns its info (``job_info``).

    Raises SubmitError after ``timeout`` seconds (the job keeps running).
    """
    jobs = jobs or client(address)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        info = job_info(job_id, jobs=jobs)
        if info["status"] in TERMINAL:
            return info
        if deadline is not None and time.monotonic() > deadline:
            raise SubmitError(
                f"job {job_id} still {info['status']} after {timeout:.0f} s (it keeps running; "
                f"`mlt jobs stop {job_id}` ends it)"
            )
        time.sleep(poll)


def follow(
    job_id: str,
    write: Callable[[str], Any],
    address: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Streams the job's logs to ``write`` until it finishes; returns its final info."""
    jobs = client(address)

    async def _tail() -> None:
        async for chunk in jobs.tail_job_logs(job_id):
            write(chunk)

    try:
        asyncio.run(asyncio.wait_for(_tail(), timeout))
    except TimeoutError:
        raise SubmitError(
            f"job {job_id} still running after {timeout:.0f} s (`mlt jobs stop {job_id}` ends it)"
        ) from None
    except RuntimeError as e:  # the log stream broke: fall back to polling
        write(f"[mlt] log stream interrupted ({e}); waiting for the job to finish\n")
    return wait(job_id, jobs=jobs, timeout=timeout)
