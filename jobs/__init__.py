"""Thin Ray job entrypoints, one module per stage: ``python -m jobs.<stage> [ARGS...]``."""

from __future__ import annotations

import sys


def run_stage(stage: str) -> None:
    """Runs ``mlt <stage> ARGS...`` with this process's arguments and exits with its code."""
    from mlt.cli import main

    sys.exit(main([stage, *sys.argv[1:]]))
