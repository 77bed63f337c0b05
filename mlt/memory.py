"""Peak memory of this process, for the load figures runs log (``peak_rss_*`` metrics)."""

from __future__ import annotations

import resource
import sys


def peak_rss_bytes() -> int:
    """Returns this process's peak resident set size so far, in bytes (ru_maxrss: KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
