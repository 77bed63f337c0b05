"""The Ray session every stage runs in: the cluster at $RAY_ADDRESS, or an embedded local one.

The embedded local Ray uses the cores there are and starts its dashboard, bound to 127.0.0.1
(8265, or the next free port): it serves the State API, without which Ray Train's placement-group
cleaner cannot tell whether the training controller lives, warns about it every second of a
pretraining run, and would not free the placement group of a controller that died.
``MLT_RAY_DASHBOARD=0`` leaves it out. Note: Ray 2.60 maps a loopback node address to
the machine's own IP on purpose, and its GCS/raylet gRPC servers listen on every interface;
keep such hosts behind a firewall (see docs), as Ray's security guide says.
"""

from __future__ import annotations

import os


def ensure_ray(num_cpus: int | None = None) -> dict:
    """Starts or joins Ray once per process; returns the cluster resources."""
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        else:
            ray.init(
                num_cpus=num_cpus or os.cpu_count(),
                include_dashboard=os.environ.get("MLT_RAY_DASHBOARD", "1") != "0",
                dashboard_host="127.0.0.1",
                log_to_driver=True,
            )
    return ray.cluster_resources()
