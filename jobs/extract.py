"""Ray job entrypoint: extract window features (``python -m jobs.extract --trunk REF [--config FILE] [KEY=VALUE...]``)."""

from jobs import run_stage

if __name__ == "__main__":
    run_stage("extract")
