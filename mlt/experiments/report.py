"""Markdown tables, PNG plots and the sections of ``docs/RESULTS.md``.

Each experiment writes ``docs/results/<name>.md`` (its section: the tables, the plots' links,
the command and wall time that made them, the comparison with the paper) and its PNGs beside
it; :func:`assemble` joins the sections, in the issue's order, into ``docs/RESULTS.md``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RESULTS = Path("docs/RESULTS.md")
SECTIONS = Path("docs/results")
#: The order of the sections in RESULTS.md (the issue's numbering); others follow, sorted.
ORDER = (
    "transfer",
    "source-classes",
    "aggregation",
    "crop-vs-conv",
    "unfrozen",
    "localisation",
    "cost",
)


@dataclass
class Section:
    """One experiment's part of RESULTS.md: its markdown body, command and wall time."""

    name: str
    title: str
    body: str
    command: str
    seconds: float
    compute_seconds: float = float("nan")
    measured: bool = True  # False: nothing measured yet (the body says what is missing)

    def markdown(self) -> str:
        """Returns the section's markdown: title, command and times, then the body.

        ``compute_seconds`` is what the section's stages took when they ran (the sum of their
        MLflow runs: pretraining, extraction, heads), ``seconds`` this invocation's wall time.
        """
        return (f"## {self.title}\n\n`{self.command}` — compute {duration(self.compute_seconds)} "
                f"(the sum of its stages' runs, its trunks' pretraining included); its last run took "
                f"{duration(self.seconds)} (stages already finished are reused, not rerun).\n\n"
                f"{self.body.strip()}\n")  # fmt: skip


def duration(seconds: float) -> str:
    """Returns ``seconds`` as a short human duration: ``42 s``, ``3 min 5 s``, ``1 h 12 min``."""
    if not np.isfinite(seconds):
        return "n/a"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


@dataclass(frozen=True)
class Stats:
    """A figure over head seeds: its mean, standard deviation (ddof 1; 0 for one seed) and count.

    What tables, plots and verdicts need; it comes from per-seed values (:meth:`of`) or, for an
    arm whose seeds were not kept, from a recorded summary (:mod:`mlt.experiments.record`).
    """

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Stats | Sequence[float] | np.ndarray) -> Stats:
        """Returns ``values`` unchanged when already Stats, else the Stats of their finite values
        (mean NaN and n 0 when none is finite)."""
        if isinstance(values, Stats):
            return values
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if not len(v):
            return cls(float("nan"), float("nan"), 0)
        return cls(float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v))


def pct(values: Stats | Sequence[float] | np.ndarray) -> str:
    """Returns ``mean ± std`` of fractions as percentages (one value: just the value)."""
    s = Stats.of(values)
    if not s.n:
        return "n/a"
    if s.n == 1:
        return f"{100 * s.mean:.1f}"
    return f"{100 * s.mean:.1f} ± {100 * s.std:.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Returns a markdown table (first column left-aligned, the others right-aligned)."""
    align = [":--"] + ["--:"] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Saves a figure atomically (temp file, then rename); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def bar_plot(path: Path, groups: Sequence[str], series: dict[str, np.ndarray | Sequence[Stats]],
             ylabel: str, title: str) -> Path:  # fmt: skip
    """Draws grouped bars: per group one bar per series (the mean over the row of its (G, S) or
    (G,) array, or its Stats per group; error bars = std over seeds); returns the PNG's path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(groups) * max(1, len(series))), 3.6))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        if isinstance(values, np.ndarray):
            values = values[:, None] if values.ndim == 1 else values
        stats = [Stats.of(row) for row in values]
        mean = np.array([s.mean for s in stats]) * 100
        err = np.array([s.std if s.n > 1 else np.nan for s in stats]) * 100
        ax.bar(x + (i - (len(series) - 1) / 2) * width, mean, width,
               yerr=None if np.isnan(err).all() else err, capsize=2, label=name)  # fmt: skip
    ax.set_xticks(
        x,
        groups,
        rotation=30 if len(groups) > 6 else 0,
        ha="right" if len(groups) > 6 else "center",
    )
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    out = _save(fig, path)
    plt.close(fig)
    return out


def line_plot(path: Path, x: Sequence[str], series: dict[str, np.ndarray], ylabel: str,
              title: str, xlabel: str = "") -> Path:  # fmt: skip
    """Draws one line per series over categorical ``x`` (mean ± std over the (X, S) rows); returns the path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, values in series.items():
        v = np.asarray(values, dtype=np.float64).reshape(len(x), -1)
        mean = np.nanmean(v, axis=1) * 100
        err = np.nanstd(v, axis=1, ddof=1) * 100 if v.shape[1] > 1 else None
        ax.errorbar(range(len(x)), mean, yerr=err, marker="o", capsize=3, label=name)
    ax.set_xticks(range(len(x)), x)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    out = _save(fig, path)
    plt.close(fig)
    return out


def write_section(section: Section, folder: Path = SECTIONS) -> Path:
    """Writes the section to ``<folder>/<name>.md`` (atomically); returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{section.name}.md"
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(section.markdown())
    os.replace(tmp, path)
    return path


def assemble(folder: Path = SECTIONS, out: Path = RESULTS, intro: str = "") -> Path:
    """Joins the sections in ``folder`` into ``out`` (the issue's order first); returns ``out``.

    Image links inside the sections are made relative to ``out``'s folder.
    """
    folder, out = Path(folder), Path(out)
    names = [p.stem for p in folder.glob("*.md")]
    ordered = [n for n in ORDER if n in names] + sorted(n for n in names if n not in ORDER)
    rel = os.path.relpath(folder, out.parent)
    parts = [intro.strip()] if intro.strip() else []
    for name in ordered:
        text = (folder / f"{name}.md").read_text()
        parts.append(text.replace("](./", f"]({rel}/"))
    tmp = out.with_name(f".tmp-{out.name}")
    tmp.write_text("\n\n".join(parts).rstrip() + "\n")
    os.replace(tmp, out)
    return out
