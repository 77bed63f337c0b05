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


def rss_parts() -> dict[str, int]:
    """Returns this process's resident memory now in bytes by kind (Linux; {} elsewhere):
    ``anon`` (private: heap, tensors), ``file`` (mapped files: LMDB, memmapped caches, read
    through the page cache and freed under pressure) and ``shmem`` (shared memory, e.g. Ray's
    object store)."""
    fields = {"RssAnon:": "anon", "RssFile:": "file", "RssShmem:": "shmem"}
    try:
        lines = _STATUS.read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key = line.split(maxsplit=1)[0] if line else ""
        if key in fields:
            out[fields[key]] = int(line.split()[1]) * 1024  # kB
    return out


class PeakSampler:
    """Samples :func:`rss_parts` on a daemon thread every ``interval`` seconds and keeps each
    kind's maximum: the peak of private (``anon``) memory, which ``VmHWM`` cannot tell apart from
    mapped files and shared memory. A spike shorter than ``interval`` can be missed. The thread
    ends with :meth:`stop`, or once the sampler is no longer referenced (a stage that failed).
    """

    def __init__(self, interval: float = 0.25) -> None:
        import threading
        import weakref

        self.interval = interval
        self._max: dict[str, int] = {}
        self._stop = threading.Event()
        self._sample()
        self._thread = threading.Thread(target=PeakSampler._loop, args=(weakref.ref(self), self._stop),
                                        name="mlt-peak-sampler", daemon=True)  # fmt: skip
        self._thread.start()

    def _sample(self) -> None:
        for kind, value in rss_parts().items():
            self._max[kind] = max(self._max.get(kind, 0), value)

    @staticmethod
    def _loop(ref, stop) -> None:
        while True:
            sampler = ref()
            if sampler is None:
                return
            interval = sampler.interval
            sampler._sample()
            del sampler  # hold no reference while waiting
            if stop.wait(interval):
                return

    def peaks(self) -> dict[str, int]:
        """Returns {kind: peak bytes} sampled so far, this moment included ({} off Linux)."""
        self._sample()
        return dict(self._max)

    def stop(self) -> dict[str, int]:
        """Stops sampling; returns the peaks (:meth:`peaks`)."""
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peaks()


def memory_metrics(
    driver: dict[str, int], actor_peaks: list[dict[str, int]] = ()
) -> dict[str, float]:  # fmt: skip
    """Returns a run's peak-memory metrics from the driver's and the actors' peaks.

    ``peak_rss_*`` is the resident peak (``VmHWM``: private memory plus touched pages of mapped
    files and shared memory); ``peak_anon_*`` the sampled peak of private memory, what a
    process really holds. ``driver``: its ``rss`` and sampled kinds; the actors' as
    :meth:`mlt.extract._Worker.peaks` returns them. Per driver, the largest actor and driver + actors.
    """
    out = {}
    for kind in ("rss", "anon"):
        if kind not in driver:
            continue
        out[f"peak_{kind}_driver_bytes"] = float(driver[kind])
        values = [p[kind] for p in actor_peaks if kind in p]
        if values:
            out[f"peak_{kind}_actor_max_bytes"] = float(max(values))
            out[f"peak_{kind}_total_bytes"] = float(driver[kind] + sum(values))
    return out
