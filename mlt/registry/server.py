"""A local MLflow tracking server (UI + REST API + registry) as a child process.

``mlt ui`` serves the run folder's SQLite store (``<run_dir>/mlflow.db``, artifacts in
``<run_dir>/mlartifacts``); the tests start one on a free port over a temporary store. The
server binds to 127.0.0.1 unless asked otherwise; any other address gets a warning, since MLflow
has no authentication by default and its models are pickles.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from mlt.errors import MltError

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def host_warning(host: str) -> str | None:
    """Returns a warning for a bind address other than the loopback, else None."""
    if host in LOCAL_HOSTS:
        return None
    return (
        f"the MLflow server binds to {host}, not 127.0.0.1: anyone who can reach this machine can"
        " read and write its runs and registered models, which are loaded by unpickling"
        " (MLflow has no authentication by default)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """Returns a TCP port that is free on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class MlflowServer:
    """A running ``mlflow server`` child process; ``stop()`` ends it (and its workers)."""

    process: subprocess.Popen
    host: str
    port: int
    log_path: Path
    warning: str | None = field(default=None)

    @property
    def url(self) -> str:
        """Returns the server's base URL (its tracking URI)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        host = "127.0.0.1" if host in ("0.0.0.0", "[::]") else host
        return f"http://{host}:{self.port}"

    def log_tail(self, chars: int = 3000) -> str:
        """Returns the end of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def running(self) -> bool:
        """Returns whether the server process is still alive."""
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """Stops the server's process group (SIGTERM, then SIGKILL after ``timeout``); returns None."""
        if self.process.poll() is not None:
            return
        pgid = self.process.pid  # started in its own session: the group is the server's own
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout)
        except ProcessLookupError:
            pass

    def __enter__(self) -> MlflowServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_server(
    backend_uri: str, artifacts_dir: str | Path, host: str = "127.0.0.1", port: int | None = None,
    workers: int = 1, timeout: float = 180.0, log_path: str | Path | None = None,
) -> MlflowServer:  # fmt: skip
    """Starts ``mlflow server`` on ``host:port`` (a free port when None) and waits until it
    answers ``/health``; returns it. ``backend_uri`` holds runs and the registry; artifacts are
    served from ``artifacts_dir``."""
    warning = host_warning(host)
    if warning:
        log.warning(warning)
    port = free_port(host if host not in ("0.0.0.0", "::") else "127.0.0.1") if not port else port
    artifacts = Path(artifacts_dir).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path else artifacts.parent / f"mlflow-server-{port}.log"
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
        "--artifacts-destination", str(artifacts), "--host", host, "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = MlflowServer(proc, host, port, log_path, warning)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.running():
            raise MltError(
                f"mlflow server on {host}:{port} exited with code {proc.returncode}; "
                f"its log ({log_path}) ends:\n{server.log_tail()}"
            )
        if _healthy(server.url):
            return server
        time.sleep(0.5)
    server.stop()
    raise MltError(
        f"mlflow server on {host}:{port} did not answer within {timeout:.0f} s; "
        f"its log ({log_path}) ends:\n{server.log_tail()}"
    )


def run_folder_store(run_dir: str | Path) -> tuple[str, Path]:
    """Returns (SQLite backend URI, artifacts folder) of a run folder, as the tracking default."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{run_dir / 'mlflow.db'}", run_dir / "mlartifacts"
