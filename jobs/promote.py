"""Ray job entrypoint: register a head run's complete model and gate @champion (``python -m jobs.promote --run RUN --name NAME``)."""

from jobs import run_stage

if __name__ == "__main__":
    run_stage("promote")
