"""``mlt submit`` and ``mlt jobs``: stages as Ray jobs on a cluster."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import click

from mlt.submit import ADDRESS_ENV, STAGES

address_option = click.option(
    "--address", default=None, metavar="URL",
    help=f"Ray job server, e.g. http://HEAD:8265 (default: ${ADDRESS_ENV}, else an http $RAY_ADDRESS).",
)  # fmt: skip


def _finish(info: dict) -> int:
    """Prints the final status line; returns 0 when the job SUCCEEDED, else 1."""
    line = f"job {info['submission_id']}: {info['status']}"
    if info["status"] != "SUCCEEDED" and info.get("message"):
        line += f" ({info['message']})"
    click.echo(line, err=True)
    return 0 if info["status"] == "SUCCEEDED" else 1


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("stage", type=click.Choice(STAGES))
@address_option
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Run config inside the project folder (uploaded with the job).")  # fmt: skip
@click.option("--wait", "wait_", is_flag=True,
              help="Follow the job's logs until it ends; exit 0 only if it SUCCEEDED.")  # fmt: skip
@click.option(
    "--timeout", type=float, default=None, help="With --wait: give up after this many seconds."
)
@click.option("--env", "env_pairs", multiple=True, metavar="K=V",
              help="Environment variable for the job (repeatable).")  # fmt: skip
@click.option("--working-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder uploaded as the job's working dir (default: the project folder).")  # fmt: skip
@click.option("--pip", is_flag=True,
              help="Install the project's pinned requirements in the job's runtime env (for clusters not built from the project image).")  # fmt: skip
@click.option("--submission-id", default=None, help="Job id (default: mlt-STAGE-DATE-TIME-XXXX).")
@click.option("--num-cpus", type=float, default=None, help="CPUs reserved for the job's driver.")
@click.option("--num-gpus", type=float, default=None, help="GPUs reserved for the job's driver.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[-- STAGE ARGS...]")
def submit(
    stage: str,
    address: str | None,
    config_path: str | None,
    wait_: bool,
    timeout: float | None,
    env_pairs: tuple[str, ...],
    working_dir: Path | None,
    pip: bool,
    submission_id: str | None,
    num_cpus: float | None,
    num_gpus: float | None,
    args: tuple[str, ...],
) -> int:
    """Run STAGE as a Ray job on a cluster: `python -m jobs.STAGE [--config FILE] ARGS...`.

    The project folder is uploaded as the job's working dir (without .git, .venv, runs/),
    MLFLOW_TRACKING_URI and the MLT_* store/data variables of this shell are forwarded, and
    --env adds more. Paths in ARGS are read on the cluster: use shared storage (or absolute
    paths on a local head). Prints the job id; `mlt jobs status|logs|stop ID` follow it up.

    Example: mlt submit extract --address http://HEAD:8265 --config configs/paper-voc07.yaml -- --trunk RUN_ID
    """
    from mlt.submit import follow, parse_env
    from mlt.submit import submit as submit_job

    job_id = submit_job(
        stage,
        address=address,
        config=config_path,
        args=args,
        env=parse_env(env_pairs),
        working_dir=working_dir,
        pip=pip,
        submission_id=submission_id,
        entrypoint_num_cpus=num_cpus,
        entrypoint_num_gpus=num_gpus,
    )
    click.echo(job_id)
    if not wait_:
        click.echo(f"follow it with: mlt jobs logs --follow {job_id}", err=True)
        return 0

    def write(chunk: str) -> None:
        sys.stdout.write(chunk)
        sys.stdout.flush()

    return _finish(follow(job_id, write, address=address, timeout=timeout))


@click.group()
def jobs() -> None:
    """Follow up the Ray jobs of `mlt submit`: list, status, logs, stop."""


@jobs.command("list")
@address_option
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
def list_cmd(address: str | None, as_json: bool) -> None:
    """List the cluster's jobs, oldest first: id, status, stage, start time, entrypoint."""
    from mlt.submit import list_jobs

    rows = list_jobs(address)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no jobs")
        return
    for r in rows:
        start = (
            dt.datetime.fromtimestamp(r["start_time"] / 1000).strftime("%Y-%m-%d %H:%M:%S")
            if r["start_time"]
            else "-"
        )
        stage = (r["metadata"] or {}).get("mlt_stage", "-")
        click.echo(
            f"{r['submission_id'] or '-':<40} {r['status']:<10} {stage:<9} {start}  {r['entrypoint']}"
        )


@jobs.command("status")
@click.argument("job_id")
@address_option
@click.option(
    "--wait", "wait_", is_flag=True, help="Wait until it ends; exit 0 only if it SUCCEEDED."
)
@click.option(
    "--timeout", type=float, default=None, help="With --wait: give up after this many seconds."
)
def status_cmd(job_id: str, address: str | None, wait_: bool, timeout: float | None) -> int:
    """Print a job's status, message, entrypoint, times and metadata as JSON.

    Exit code 0 unless --wait is given and the job did not succeed.
    """
    from mlt.submit import job_info, wait

    info = wait(job_id, address, timeout=timeout) if wait_ else job_info(job_id, address)
    click.echo(json.dumps(info, indent=2))
    return _finish(info) if wait_ else 0


@jobs.command("logs")
@click.argument("job_id")
@address_option
@click.option("-f", "--follow", "follow_", is_flag=True, help="Keep streaming until the job ends.")
def logs_cmd(job_id: str, address: str | None, follow_: bool) -> int:
    """Print a job's logs (stdout and stderr of its driver)."""
    from mlt.submit import follow, job_logs

    if not follow_:
        click.echo(job_logs(job_id, address), nl=False)
        return 0

    def write(chunk: str) -> None:
        sys.stdout.write(chunk)
        sys.stdout.flush()

    return _finish(follow(job_id, write, address=address))


@jobs.command("stop")
@click.argument("job_id")
@address_option
@click.option("--wait", "wait_", is_flag=True, help="Wait until the job has stopped.")
def stop_cmd(job_id: str, address: str | None, wait_: bool) -> None:
    """Stop a running job (its driver and the tasks and actors it started)."""
    from mlt.submit import job_info, stop_job, wait

    if stop_job(job_id, address):
        click.echo(f"stop requested for {job_id}")
    else:
        click.echo(f"{job_id} had already ended ({job_info(job_id, address)['status']})")
    if wait_:
        info = wait(job_id, address, timeout=120)
        click.echo(f"job {job_id}: {info['status']}")
