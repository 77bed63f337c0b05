"""Arms side by side: mAP tables over seeds, per-class tables and plots, verdicts vs the paper."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlt.experiments import record
from mlt.experiments.report import SECTIONS, Section, Stats, bar_plot, pct, table
from mlt.experiments.runner import ArmResult, Echo, run_arm, stage_seconds
from mlt.experiments.spec import ExperimentSpec


@dataclass
class Context:
    """How an experiment runs: its spec, command-line overrides, output and echo."""

    spec: ExperimentSpec
    overrides: tuple[str, ...] = ()
    echo: Echo = print
    progress: bool = True
    prune: bool = False
    command: str = ""
    out: Path = SECTIONS
    trunks: dict[str, str] = field(default_factory=dict)  # arm → trunk run id given
    arms: tuple[str, ...] = ()  # only these arms (default: every arm of the spec)
    existing: bool = False  # run nothing: tables of what has finished
    arm_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)  # set by the run
    record: dict[str, dict] = field(default_factory=dict)  # arm → entry of the committed record
    results: dict[str, ArmResult] = field(default_factory=dict)  # what the section showed

    def config(self, arm: str):
        """Returns the run config of ``arm``: the command-line overrides, then any the
        experiment set for that arm (e.g. the folder its generated source set went to)."""
        return self.spec.arm_config(arm, (*self.overrides, *self.arm_overrides.get(arm, ())))

    def section(self, body: str, start: float, results: dict[str, ArmResult]) -> Section:
        """Returns the experiment's section: ``body``, this render's time since ``start``
        (a ``time.perf_counter()``) and the compute time of the arms' stages; keeps ``results``
        as what the section showed (the record written after it). Arms read from the record
        are named at the end, with where their figures come from."""
        self.results = dict(results)
        sources: dict[str, list[str]] = {}
        for arm, r in results.items():
            if r.source:
                sources.setdefault(r.source, []).append(arm)
        if sources:
            body += "\n\n" + "\n".join(
                f"Arms {', '.join(arms)}: figures read from the record `{self.spec.name}.json` "
                f"({source}); the compute time counts only the stage times it holds."
                for source, arms in sources.items())  # fmt: skip
        return Section(self.spec.name, self.spec.title, body, self.command,
                       time.perf_counter() - start, stage_seconds(results))  # fmt: skip


def run_arms(ctx: Context, arms: Sequence[str] | None = None) -> dict[str, ArmResult]:
    """Runs the spec's arms (or ``arms``, or the context's) with its seeds; returns arm → ArmResult.

    Arms left out by the context's ``arms`` are still listed when they have finished heads (their
    caches are left alone by ``--prune``). Such an arm with fewer scored heads in this tracking
    store than in the experiment's record (a fresh checkout, an arm measured on another machine)
    is taken from the record when it was made with the same config.
    """
    out = {}
    for arm in arms or list(ctx.spec.arms):
        only_existing = ctx.existing or bool(ctx.arms and arm not in ctx.arms)
        config = ctx.config(arm)
        r = run_arm(arm, config, ctx.spec.seeds, ctx.echo, ctx.progress,
                    trunk=ctx.trunks.get(arm), prune=ctx.prune and not only_existing,
                    existing=only_existing)  # fmt: skip
        if only_existing and len(r.heads) < len(ctx.spec.seeds):
            recorded = record.arm_result(ctx.record.get(arm), arm, config)
            if recorded is not None and recorded.seeds > len(r.heads):
                ctx.echo(f"  taken from the record: {recorded.source}")
                r = recorded
        if r.seeds or not only_existing:
            out[arm] = r
    return out


#: How a section with nothing measured starts (:func:`pending`).
PENDING = "**Not measured yet**"


def pending(ctx: Context, missing: Sequence[str] | str, seconds: float = 0.0) -> Section:
    """Returns the section of an experiment whose arms are not all measured yet."""
    missing = [missing] if isinstance(missing, str) else list(missing)
    body = (f"{PENDING}: {', '.join(missing)} (no finished, test-scored heads in the "
            f"tracking store). `{ctx.command.replace(' --existing', '')}` runs what is missing; "
            "it reuses every finished stage.")  # fmt: skip
    return Section(ctx.spec.name, ctx.spec.title, body, ctx.command, seconds, measured=False)


def target_classes(result: ArmResult) -> list[str]:
    """Returns the target's class names (label order) of an arm's config."""
    from mlt.data.voc import VocDataset

    return list(VocDataset(Path(result.config.data.target)).classes)


def map_table(results: dict[str, ArmResult], labels: dict[str, str] | None = None) -> str:
    """Returns the table of val and test mAP (VOC07 and area) and pointing per arm, mean ± std."""
    labels = labels or {}
    rows = []
    for arm, r in results.items():
        rows.append([labels.get(arm, arm), r.seeds, pct(r.stats("val_mAP")),
                     pct(r.stats("test_mAP")), pct(r.stats("test_mAP_area")),
                     pct(r.stats("test_pointing_mean"))])  # fmt: skip
    return table(
        ["arm", "seeds", "val mAP", "test mAP (VOC07)", "test mAP (area)", "pointing"], rows
    )


def class_stats(result: ArmResult, classes: Sequence[str], prefix: str = "test_ap_") -> list[Stats]:
    """Returns the per-class figures ``prefix + class`` of an arm over its seeds, class order."""
    return [result.stats(f"{prefix}{c}") for c in classes]


def class_table(results: dict[str, ArmResult], classes: Sequence[str], prefix: str = "test_ap_",
                labels: dict[str, str] | None = None) -> str:  # fmt: skip
    """Returns the per-class table (rows: classes and the mean; columns: arms), mean ± std."""
    labels = labels or {}
    per = {arm: class_stats(r, classes, prefix) for arm, r in results.items()}
    rows = [[c, *(pct(per[a][i]) for a in results)] for i, c in enumerate(classes)]
    rows.append(["**mean**", *(pct(r.class_mean(list(classes), prefix)) for r in results.values())])
    return table(["class", *(labels.get(a, a) for a in results)], rows)


def class_plot(path: Path, results: dict[str, ArmResult], classes: Sequence[str], title: str,
               prefix: str = "test_ap_", ylabel: str = "test AP (%)") -> Path:  # fmt: skip
    """Draws per-class bars, one series per arm (error bars over seeds); returns the PNG path."""
    series = {arm: class_stats(r, classes, prefix) for arm, r in results.items()}
    return bar_plot(path, list(classes), series, ylabel, title)


def verdict(
    a: Stats | np.ndarray, b: Stats | np.ndarray, paper_diff: float
) -> tuple[float, float, str]:
    """Returns (a − b in points, its standard error in points, a verdict against the paper's sign).

    ``a`` and ``b``: per-seed values or their Stats. The error is the head-seed noise only (one
    trunk per arm): 'reproduces' when the gap has the paper's sign and exceeds two standard
    errors, 'reversed' when the opposite, else 'within noise'. ``paper_diff`` 0 (the paper gives
    no direction): 'beyond head-seed noise' or 'within noise'.
    """
    a, b = Stats.of(a), Stats.of(b)
    if not a.n or not b.n:
        return float("nan"), float("nan"), "not measured yet"
    diff = 100 * (a.mean - b.mean)
    se = 100 * float(np.sqrt(a.std**2 / a.n + b.std**2 / b.n))
    if abs(diff) <= 2 * se or diff == 0:
        word = "within head-seed noise"
    elif paper_diff == 0:
        word = "beyond head-seed noise"
    elif np.sign(diff) == np.sign(paper_diff):
        word = "reproduces the paper's direction"
    else:
        word = "reversed compared with the paper"
    return float(diff), se, word
