"""The Ray session every stage runs in: the cluster at $RAY_ADDRESS, or an embedded local one.

The embedded local Ray uses the cores there are and starts its dashboard on 127.0.0.1, on a
free port that every worker is told as ``RAY_API_SERVER_ADDRESS``: the dashboard serves the
State API, which Ray Train's placement-group cleaner asks every second whether the training
controller lives. Without it the cleaner warns every second of a pretraining run; told no
address, it asks whatever answers at 127.0.0.1:8265 (another cluster's dashboard says the
controller is gone, and the training worker is destroyed mid-run) or, with several clusters on
the machine, fails. ``MLT_RAY_DASHBOARD=0`` leaves the dashboard out.

Note: Ray 2.60 maps a loopback node address to the machine's own IP on purpose, and its
GCS/raylet gRPC servers listen on every interface; keep such hosts behind a firewall (see docs),
as Ray's security guide says.
"""

from __future__ import annotations

import os

from mlt.registry.server import free_port


def ensure_ray(num_cpus: int | None = None) -> dict:
    """Starts or joins Ray once per process; returns the cluster resources."""
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        else:
            dashboard: dict = {"include_dashboard": False}
            if os.environ.get("MLT_RAY_DASHBOARD", "1") != "0":
                port = free_port("127.0.0.1")
                api = {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}
                dashboard = {"include_dashboard": True, "dashboard_port": port,
                             "runtime_env": {"env_vars": api}}  # fmt: skip
            ray.init(
                num_cpus=num_cpus or os.cpu_count(),
                dashboard_host="127.0.0.1",
                log_to_driver=True,
                **dashboard,
            )
    return ray.cluster_resources()
