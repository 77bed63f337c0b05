"""Ray job entrypoint: score a head on the test split (``python -m jobs.evaluate --head RUN [--config FILE]``)."""

from jobs import run_stage

if __name__ == "__main__":
    run_stage("evaluate")
