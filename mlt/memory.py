"""Peak memory of this process, for the load figures runs log (``peak_rss_*`` metrics).

On Linux the peak is ``VmHWM`` of ``/proc/self/status``, which :func:`reset_peak` restarts
(``/proc/self/clear_refs``), so a stage run in a long-lived process (an experiment trains
heads, then extracts) reports its own peak; elsewhere it is ``ru_maxrss``, the process's
lifetime peak.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS, _CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def reset_peak() -> bool:
    """Restarts the peak-RSS count of this process; returns False where that is not possible."""
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Returns this process's peak resident set size in bytes since :func:`reset_peak` (Linux),
    else over its lifetime (``ru_maxrss``)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
