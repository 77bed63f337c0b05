"""Ray job entrypoint: extract window features (``python -m jobs.extract --trunk REF [--config FILE] [KEY=VALUE...]``)."""

from __future__ import annotations

import sys

from mlt.cli import main

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
