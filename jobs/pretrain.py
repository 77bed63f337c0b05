"""Ray job entrypoint: pretrain the trunk (``python -m jobs.pretrain --config FILE [KEY=VALUE...]``)."""

from __future__ import annotations

import sys

from mlt.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
