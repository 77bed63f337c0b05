"""Experiment specs: ``configs/experiments/<name>.yaml``.

A spec holds ``title``, ``kind`` (the module of :mod:`mlt.experiments` that runs it; default the
spec's name), ``base`` (a run config), ``common`` overrides for every arm, ``seeds`` of the heads,
``arms`` (name → list of ``key=value`` overrides) and ``options`` (the kind's own settings;
``options.notes``: a discussion appended to the section).
Command-line overrides go after the arm's, so ``mlt experiment transfer data.target=/other/VOC``
runs every arm on another VOC-format target set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlt.config import RunConfig, load_config, load_yaml_mapping
from mlt.errors import InputError

SPEC_DIR = Path("configs/experiments")
_KEYS = {"title", "kind", "base", "common", "seeds", "arms", "options"}


@dataclass
class ExperimentSpec:
    """One experiment: its arms' configs come from ``base`` + ``common`` + the arm's overrides."""

    name: str
    path: Path
    title: str
    kind: str
    base: Path
    common: list[str]
    seeds: list[int]
    arms: dict[str, list[str]]
    options: dict[str, Any] = field(default_factory=dict)

    def arm_config(self, arm: str, overrides: tuple[str, ...] | list[str] = ()) -> RunConfig:
        """Returns the validated run config of ``arm`` (base + common + arm + ``overrides``)."""
        if arm not in self.arms:
            raise InputError(
                self.path, "arms", arm, f"one of {sorted(self.arms)}", kind="unknown arm"
            )
        return load_config(self.base, [*self.common, *self.arms[arm], *overrides])


def spec_names(spec_dir: Path = SPEC_DIR) -> list[str]:
    """Returns the names of the specs in ``spec_dir`` (file stems), sorted."""
    return sorted(p.stem for p in Path(spec_dir).glob("*.yaml"))


def load_spec(name: str, spec_dir: Path = SPEC_DIR) -> ExperimentSpec:
    """Returns the spec named ``name`` (a stem in ``spec_dir``, or a path to a YAML file)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else Path(spec_dir) / f"{name}.yaml"
    if not path.is_file():
        raise InputError(path, "NAME", name, f"an experiment among {spec_names(spec_dir)}",
                         kind="unknown experiment")  # fmt: skip
    data = load_yaml_mapping(path)
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise InputError(path, unknown[0], data[unknown[0]], f"only keys {sorted(_KEYS)}",
                         kind="invalid experiment")  # fmt: skip
    for key in ("title", "base"):
        if not isinstance(data.get(key), str):
            raise InputError(path, key, data.get(key), "a string", kind="invalid experiment")
    arms = data.get("arms") or {"main": []}
    if not isinstance(arms, dict) or not all(
        isinstance(v, list | type(None)) and all(isinstance(o, str) for o in v or [])
        for v in arms.values()
    ):
        raise InputError(path, "arms", arms, "a mapping of arm name → list of KEY=VALUE strings",
                         kind="invalid experiment")  # fmt: skip
    seeds = data.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise InputError(path, "seeds", seeds, "a non-empty list of non-negative integers",
                         kind="invalid experiment")  # fmt: skip
    common = data.get("common") or []
    if not isinstance(common, list) or not all(isinstance(o, str) for o in common):
        raise InputError(path, "common", common, "a list of KEY=VALUE strings",
                         kind="invalid experiment")  # fmt: skip
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise InputError(path, "options", options, "a mapping", kind="invalid experiment")
    return ExperimentSpec(
        name=path.stem, path=path, title=data["title"], kind=str(data.get("kind", path.stem)),
        base=Path(data["base"]), common=list(common), seeds=list(seeds),
        arms={str(k): list(v or []) for k, v in arms.items()}, options=options,
    )  # fmt: skip
