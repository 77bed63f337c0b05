"""Which module runs which experiment, in the issue's order, and the run of one experiment."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from mlt.errors import InputError
from mlt.experiments.report import ORDER, RESULTS, SECTIONS, assemble, write_section
from mlt.experiments.spec import load_spec, spec_names

INTRO = """# Results: Tiny-ImageNet → TinyVOC

Does transfer of mid-level CNN features behave here as Oquab et al. found on ImageNet → PASCAL
VOC? Source: Tiny-ImageNet-200 (64-px images, 300 per class). Target: TinyVOC (12 VOC classes,
1,250 train / 1,250 val / 2,500 test scenes, `../shared/data`). Trunk: alexnet-small (the paper's
AlexNet scaled to 64-px inputs) pretrained with Ray Train on this 2-core CPU; window features of
its fc7 cached in the LMDB feature store; heads FCa (1024) → FCb trained on train, early stopping
and every choice on val; test touched only for the figures below. mAP is the VOC07 11-point
form unless "area" is said. "± " is the standard deviation over head seeds (3 seeds per arm):
pretraining runs are single (each costs 15–90 min here), so differences between trunks smaller
than a pretraining seed's spread are not established. Each section names the command that made
it (`make results` runs them all) and its wall time; a rerun reuses every finished stage. Each
render keeps its figures beside the section (`results/NAME.json`), so another checkout can
render it again; a section whose figures are neither there nor in the tracking store is kept
as written.
"""


def module_name(kind: str) -> str:
    """Returns the module of :mod:`mlt.experiments` for a spec kind (``source-classes`` → ``source_classes``)."""
    return f"mlt.experiments.{kind.replace('-', '_')}"


def ordered_names() -> list[str]:
    """Returns every spec name, the issue's order first."""
    names = spec_names()
    return [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]


def titles() -> dict[str, str]:
    """Returns spec name → title for every spec, in order."""
    return {n: load_spec(n).title for n in ordered_names()}


def run_experiment(
    name: str, overrides: tuple[str, ...] = (), out: Path = SECTIONS, results: Path = RESULTS,
    prune: bool = False, progress: bool = True, echo: Callable[[str], None] = print,
    command: str = "", arms: tuple[str, ...] = (), existing: bool = False,
) -> Path:  # fmt: skip
    """Runs experiment ``name``, writes its section and its record (:mod:`mlt.experiments.record`)
    and re-assembles ``results``; returns the section path.

    A section with nothing measured (no arm in the tracking store nor in the record) does not
    replace a section with figures: that one is kept, and the echo says so.
    """
    from mlt.experiments import record
    from mlt.experiments.compare import Context

    spec = load_spec(name)
    for arm in arms:
        if arm not in spec.arms:
            raise InputError(
                spec.path, "arms", arm, f"one of {sorted(spec.arms)}", kind="unknown arm"
            )
    module = importlib.import_module(module_name(spec.kind))
    ctx = Context(spec, tuple(overrides), echo, progress, prune, command or f"mlt experiment {name}",
                  Path(out), arms=tuple(arms), existing=existing,
                  record=record.load(record.record_path(Path(out), spec.name)))  # fmt: skip
    section = module.run(ctx)
    kept = Path(out) / f"{spec.name}.md"
    if not section.measured and kept.is_file() and _has_figures(kept):
        echo(f"{kept}: kept (its figures are not in this tracking store nor in the record; "
             f"nothing measured here replaces them)")  # fmt: skip
        assemble(Path(out), Path(results), intro(overrides))
        return kept
    notes = spec.options.get("notes")
    if notes and not overrides and "Not measured yet" not in section.body:
        # the notes discuss the spec's own figures: a run with overrides (another target) has others
        section.body += f"\n\n**Discussion** (the spec's notes, written after reading the figures). {notes.strip()}\n"
    path = write_section(section, Path(out))
    if ctx.results:
        record.write(record.record_path(Path(out), spec.name), spec.name, ctx.results, ctx.record)
    assemble(Path(out), Path(results), intro(overrides))
    return path


def _has_figures(section: Path) -> bool:
    """Returns whether a written section holds measured figures (not only what is missing)."""
    from mlt.experiments.compare import PENDING

    return PENDING not in section.read_text()


def intro(overrides: tuple[str, ...] = ()) -> str:
    """Returns the report's introduction; with ``overrides`` it says the figures are of that run,
    not of the setting described, and that the discussions are left out."""
    if not overrides:
        return INTRO
    return (INTRO + f"\n**This report was run with the overrides `{' '.join(overrides)}`** (e.g. "
            "another target set): its figures are that run's, and the discussions written for "
            "the committed figures are left out.\n")  # fmt: skip
