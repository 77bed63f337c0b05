"""A loopback Ray head for development and tests: start, status, stop.

``python -m cluster.local start`` (from the repository root) starts a one-node Ray cluster that
is this machine's own: its temp dir (``/tmp/mltray-XXXX``), explicit free ports, the dashboard
and job server bound to 127.0.0.1, and one ``RAY_AUTH_MODE`` (``token`` by default) for the head
and every client that talks to it. It prints the job-server URL and the two lines to export;
``mlt submit STAGE --address URL`` then runs a stage on it. ``stop`` ends exactly the processes
this head started (never ``ray stop``, which kills every Ray process on the machine, other
sessions included) and removes the stale ``ray_current_cluster`` file of its temp dir.

Ray maps a loopback node address to the machine's own IP on purpose, and GCS/raylet listen on
every interface: keep such hosts behind a firewall (token auth is on by default here).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "mlt-local-head.json"  # inside the head's temp dir
AUTH_MODES = ("token", "disabled")
PORT_NAMES = (
    "gcs",
    "dashboard",
    "dashboard_agent_listen",
    "dashboard_agent_grpc",
    "ray_client_server",
    "runtime_env_agent",
    "metrics_export",
    "node_manager",
    "object_manager",
)


class LocalHeadError(RuntimeError):
    """The local head could not be started, found or stopped; the message says why."""


@dataclass
class LocalHead:
    """A running (or last known) loopback head."""

    temp_dir: str
    pid: int  # the `ray start --head --block` process; every Ray process of the head descends from it
    ports: dict[str, int]
    auth_mode: str
    num_cpus: int
    gcs_address: str = ""
    started_at: float = field(default_factory=time.time)
    owns_temp_dir: bool = True  # made by start(): stop() may delete it

    @property
    def dashboard_url(self) -> str:
        """Returns the job server / dashboard URL (what ``mlt submit --address`` takes)."""
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    @property
    def log_file(self) -> Path:
        """Returns the file that holds the output of ``ray start``."""
        return Path(self.temp_dir) / "head.log"

    def env(self) -> dict[str, str]:
        """Returns the environment variables a client of this head needs."""
        return {"RAY_API_SERVER_ADDRESS": self.dashboard_url, "RAY_AUTH_MODE": self.auth_mode}

    def to_dict(self) -> dict:
        """Returns the head as a JSON-able dict (addresses included)."""
        return {
            **asdict(self),
            "dashboard_url": self.dashboard_url,
            "env": self.env(),
            "log_file": str(self.log_file),
        }


def _pointer_file() -> Path:
    """Returns the per-user file that names the last head started (for ``stop``/``status``)."""
    return Path(tempfile.gettempdir()) / f"mlt-local-head-{os.getuid()}.json"


def free_ports(n: int) -> list[int]:
    """Returns ``n`` distinct TCP ports free on every interface right now."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
            port = s.getsockname()[1]
            if port not in ports:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return Path(path).is_file() and Path(path).stat().st_size > 0


def _ray_exe() -> str:
    exe = Path(sys.executable).parent / "ray"
    if exe.exists():
        return str(exe)
    found = shutil.which("ray")
    if not found:
        raise LocalHeadError(
            "no `ray` executable beside this Python or on PATH: install ray[default]"
        )
    return found


def _head_env(auth_mode: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        env.pop(key, None)
    env["RAY_AUTH_MODE"] = auth_mode
    # jobs run `python -m jobs.<stage>`: this Python must be the first one on the head's PATH
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _auth_headers(auth_mode: str) -> dict[str, str]:
    if auth_mode != "token":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token:
        path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
        token = Path(path).read_text().strip()
    return {"Authorization": f"Bearer {token}"}


def _job_server_up(head: LocalHead) -> bool:
    req = urllib.request.Request(
        f"{head.dashboard_url}/api/version", headers=_auth_headers(head.auth_mode)
    )
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(
    temp_dir: str | os.PathLike | None = None,
    num_cpus: int | None = None,
    auth_mode: str | None = None,
    timeout: float = 180.0,
) -> LocalHead:
    """Starts a loopback Ray head in its own temp dir and waits for its job server; returns it.

    ``auth_mode`` defaults to ``$RAY_AUTH_MODE`` or ``token`` (a token is generated into
    ``~/.ray/auth_token`` when there is none). Stops what it started if the head does not come up.
    """
    auth_mode = auth_mode or os.environ.get("RAY_AUTH_MODE") or "token"
    if auth_mode not in AUTH_MODES:
        raise LocalHeadError(f"auth mode {auth_mode!r}: expected one of {', '.join(AUTH_MODES)}")
    ray = _ray_exe()
    env = _head_env(auth_mode)
    if auth_mode == "token" and not _token_available():
        subprocess.run(
            [ray, "get-auth-token", "--generate"], env=env, check=True, capture_output=True
        )
    tmp = Path(temp_dir) if temp_dir else Path(tempfile.mkdtemp(prefix="mltray-", dir="/tmp"))
    tmp.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    num_cpus = num_cpus or os.cpu_count() or 1
    cmd = [
        ray, "start", "--head", "--block", "--disable-usage-stats",
        f"--temp-dir={tmp}",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--port={ports['gcs']}",
        f"--dashboard-port={ports['dashboard']}",
        f"--dashboard-agent-listen-port={ports['dashboard_agent_listen']}",
        f"--dashboard-agent-grpc-port={ports['dashboard_agent_grpc']}",
        f"--ray-client-server-port={ports['ray_client_server']}",
        f"--runtime-env-agent-port={ports['runtime_env_agent']}",
        f"--metrics-export-port={ports['metrics_export']}",
        f"--node-manager-port={ports['node_manager']}",
        f"--object-manager-port={ports['object_manager']}",
    ]  # fmt: skip
    log = open(tmp / "head.log", "ab")  # noqa: SIM115 (handed to the child)
    try:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        log.close()
    head = LocalHead(str(tmp), proc.pid, ports, auth_mode, num_cpus, owns_temp_dir=not temp_dir)
    _write_state(head)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise LocalHeadError(
                    f"`ray start` exited with code {proc.returncode}; {head.log_file}:\n"
                    + _tail(head.log_file)
                )
            # `ray start --block` writes the address file last, once the head is complete
            if (tmp / "ray_current_cluster").exists() and _job_server_up(head):
                break
            if time.monotonic() > deadline:
                raise LocalHeadError(
                    f"the job server at {head.dashboard_url} did not answer within {timeout:.0f} s; "
                    f"{head.log_file}:\n" + _tail(head.log_file)
                )
            time.sleep(1.0)
    except BaseException:
        stop(head, remove_temp_dir=False)
        raise
    head.gcs_address = (tmp / "ray_current_cluster").read_text().strip()
    _write_state(head)
    return head


def _write_state(head: LocalHead) -> None:
    text = json.dumps(head.to_dict(), indent=2)
    (Path(head.temp_dir) / STATE_FILE).write_text(text)
    _pointer_file().write_text(text)


def load(temp_dir: str | os.PathLike | None = None) -> LocalHead:
    """Returns the head recorded in ``temp_dir`` (default: the last one started by this user)."""
    path = Path(temp_dir) / STATE_FILE if temp_dir else _pointer_file()
    if not path.exists():
        where = temp_dir or "this user (no head started)"
        raise LocalHeadError(f"{path}: no local head recorded for {where}")
    data = json.loads(path.read_text())
    fields = {f.name for f in dataclasses.fields(LocalHead)}
    return LocalHead(**{k: v for k, v in data.items() if k in fields})


def _head_processes(head: LocalHead) -> list:
    """Returns the psutil processes of this head: the `ray start` process and its descendants,
    plus any Ray process whose command line names the head's temp dir (if one was re-parented)."""
    import psutil

    procs: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(head.pid)
        if head.temp_dir in " ".join(root.cmdline()):
            procs[root.pid] = root
            for child in root.children(recursive=True):
                procs[child.pid] = child
    except psutil.Error:
        pass
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            mine = f"{head.temp_dir}/" in cmdline or cmdline.endswith(head.temp_dir)
            if mine and "/ray/" in cmdline:  # Ray's own binaries and scripts, not e.g. a `tail`
                procs.setdefault(proc.pid, proc)
                for child in proc.children(recursive=True):
                    procs.setdefault(child.pid, child)
        except psutil.Error:
            continue
    procs.pop(os.getpid(), None)
    return list(procs.values())


def status(head: LocalHead) -> dict:
    """Returns the head's state: alive processes, whether its job server answers, its addresses."""
    procs = _head_processes(head)
    return {
        **head.to_dict(),
        "processes": len(procs),
        "running": bool(procs),
        "job_server_up": bool(procs) and _job_server_up(head),
    }


def stop(head: LocalHead, grace: float = 10.0, remove_temp_dir: bool = True) -> int:
    """Stops every process of this head (SIGTERM, then SIGKILL after ``grace`` s), removes its
    ``ray_current_cluster`` file (and its temp dir, if ``start`` made it, unless told not to);
    returns how many processes were signalled."""
    import psutil

    procs = _head_processes(head)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    # a second pass: workers the raylet forked while the first signals were in flight
    late = _head_processes(head)
    for proc in late:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(late, timeout=5)
    tmp = Path(head.temp_dir)
    with contextlib.suppress(FileNotFoundError):
        (tmp / "ray_current_cluster").unlink()
    pointer = _pointer_file()
    with contextlib.suppress(OSError, ValueError):
        if json.loads(pointer.read_text()).get("temp_dir") == head.temp_dir:
            pointer.unlink()
    if remove_temp_dir and head.owns_temp_dir:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(procs) + len(late)


@contextlib.contextmanager
def local_head(**kwargs) -> Iterator[LocalHead]:
    """Yields a started head and stops it on exit, whatever happened (``start``'s arguments)."""
    head = start(**kwargs)
    try:
        yield head
    finally:
        stop(head, remove_temp_dir=not os.environ.get("MLT_KEEP_RAY_TEMP"))


def main(argv: list[str] | None = None) -> int:
    """``python -m cluster.local start|status|stop``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m cluster.local", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start a loopback head and print its addresses")
    p_start.add_argument("--num-cpus", type=int, default=None)
    p_start.add_argument("--auth-mode", choices=AUTH_MODES, default=None,
                         help="default: $RAY_AUTH_MODE, else token")  # fmt: skip
    p_start.add_argument("--temp-dir", default=None, help="default: a new /tmp/mltray-XXXX")
    p_start.add_argument("--timeout", type=float, default=180.0)
    for name in ("status", "stop"):
        p = sub.add_parser(name, help=f"{name} the head (default: the last one started)")
        p.add_argument("--temp-dir", default=None)
    p_stop = sub.choices["stop"]
    p_stop.add_argument("--keep-temp-dir", action="store_true", help="keep its logs")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            head = start(args.temp_dir, args.num_cpus, args.auth_mode, args.timeout)
            print(json.dumps(head.to_dict(), indent=2))
            print("# use it with:", file=sys.stderr)
            for key, value in head.env().items():
                print(f"export {key}={value}", file=sys.stderr)
            return 0
        head = load(args.temp_dir)
        if args.command == "status":
            info = status(head)
            print(json.dumps(info, indent=2))
            return 0 if info["job_server_up"] else 1
        n = stop(head, remove_temp_dir=not args.keep_temp_dir)
        print(f"stopped the head in {head.temp_dir} ({n} processes)")
        return 0
    except LocalHeadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
