"""Ray job entrypoint: the whole pipeline from one config (``python -m jobs.pipeline [--config FILE] [--stage S...]``)."""

from jobs import run_stage

if __name__ == "__main__":
    run_stage("pipeline")
