"""Ray job entrypoint: pretrain the trunk (``python -m jobs.pretrain --config FILE [KEY=VALUE...]``)."""

from jobs import run_stage

if __name__ == "__main__":
    run_stage("pretrain")
