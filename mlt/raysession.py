"""The Ray session every stage runs in: the cluster at $RAY_ADDRESS, or an embedded local one.

The embedded local Ray uses the cores there are, binds to 127.0.0.1, and starts its
dashboard only when ``MLT_RAY_DASHBOARD=1`` (it binds 127.0.0.1 too).
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
                include_dashboard=os.environ.get("MLT_RAY_DASHBOARD") == "1",
                dashboard_host="127.0.0.1",
                _node_ip_address="127.0.0.1",
                log_to_driver=True,
            )
    return ray.cluster_resources()
