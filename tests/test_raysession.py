"""The embedded local Ray and Ray Train's placement-group cleaner (slow: a second Ray cluster).

Ray Train 2.60 starts a cleaner actor beside each training controller that asks the State API,
every second, whether the controller still lives, and removes the workers' placement group
when it does not. The State API is served by the cluster's dashboard: without one the cleaner
warns every second and asks whatever answers at 127.0.0.1:8265, so another cluster's dashboard
there (this session's, a dev cluster, another mlt run) tells it the controller is gone and the
training worker is destroyed mid-run; with one but no address, it finds several clusters on the
machine and fails. The embedded Ray (mlt.raysession) tells its workers its own dashboard.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

TRAIN = textwrap.dedent(
    """
    import time, ray, ray.train
    from ray.train.torch import TorchTrainer
    from mlt.raysession import ensure_ray

    ensure_ray(2)

    def loop(config):
        for step in range(6):
            time.sleep(2)
            ray.train.report({"step": step})

    trainer = TorchTrainer(loop, scaling_config=ray.train.ScalingConfig(num_workers=1),
                           run_config=ray.train.RunConfig(
                               name="cleaner-check", storage_path=sys.argv[1],
                               failure_config=ray.train.FailureConfig(max_failures=0)))
    result = trainer.fit()
    print("FINISHED", result.error, flush=True)
    """
)


@pytest.mark.slow
def test_training_beside_another_clusters_dashboard_is_left_alone(ray_session, tmp_path) -> None:
    # two clusters on the machine: this session's (ray_session, its own dashboard) and the child's
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLT_RAY_DASHBOARD")}
    proc = subprocess.run([sys.executable, "-c", "import sys\n" + TRAIN, str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "FINISHED None" in out
    for fault in ("placement group was removed", "Failed to query Ray Train Controller actor state",
                  "Found multiple active Ray instances"):  # fmt: skip
        assert fault not in out, out[-3000:]
