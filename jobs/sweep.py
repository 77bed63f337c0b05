"""Ray job entrypoint: sweep heads on a feature set (``python -m jobs.sweep --features ID [--config FILE] [KEY=VALUE...]``)."""

from jobs import run_stage

if __name__ == "__main__":
    run_stage("sweep")
