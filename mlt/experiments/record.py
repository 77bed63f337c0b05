"""The committed record of an experiment's figures: ``<out>/<name>.json`` beside its section.

The tracking store (MLflow under ``runs/``) belongs to one machine and is never committed, so
without a record a fresh checkout could neither re-render a section nor add one arm to arms
measured elsewhere. Each render writes, per arm it showed: the arm's config key
(:func:`config_key`), its trunk and the trunk run's figures, its feature set and the extraction's
figures, and every head's seed, run id, wall time and metrics. An arm that this tracking store
lacks is read back from the record when its config key is the same (same spec, same overrides).

An arm measured before records were kept may hold only a ``summary`` (metric → [mean, std, n]
over its head seeds), transcribed from the section it was published in; its ``source`` says so.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from mlt.config import RunConfig
from mlt.errors import InputError
from mlt.experiments.report import Stats
from mlt.experiments.runner import ArmResult, HeadFigures
from mlt.pipeline import stage_digest

#: Config fields that say how a stage ran, not what it computed: left out of the key.
RUNTIME_FIELDS: dict[str, Any] = {
    "run_dir": True,
    "tracking": True,
    "data": {"skip_bad"},
    "pretrain": {"workers", "use_gpu", "loader", "loader_workers", "max_failures"},
    "extract": {"workers", "batch_size", "chunk_images", "store"},
    "head": {"seed"},
}


def config_key(config: RunConfig) -> str:
    """Returns the digest of what an arm's figures depend on: its config as written (paths
    unresolved, so the key is the same in another checkout), less :data:`RUNTIME_FIELDS`."""
    return stage_digest(config.model_dump(mode="json", exclude=RUNTIME_FIELDS))


def record_path(out: Path, name: str) -> Path:
    """Returns the record file of experiment ``name`` in the sections folder ``out``."""
    return Path(out) / f"{name}.json"


def load(path: Path) -> dict[str, dict[str, Any]]:
    """Returns arm → entry of the record at ``path`` ({} when there is none).

    A file that is not a record is an :class:`InputError` naming it and the field.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(path, "(file)", f"line {e.lineno}", "a JSON record",
                         kind="invalid experiment record") from e  # fmt: skip
    arms = data.get("arms") if isinstance(data, dict) else None
    if not isinstance(arms, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("key"), str) for e in arms.values()
    ):
        raise InputError(path, "arms", type(arms).__name__,
                         "a mapping of arm → entry with a string `key`",
                         kind="invalid experiment record")  # fmt: skip
    return arms


def arm_result(entry: dict[str, Any] | None, arm: str, config: RunConfig) -> ArmResult | None:
    """Returns the arm's result read from its record ``entry``, or None when there is no entry
    or it was made with another config (its key differs from ``config``'s)."""
    if not entry or entry["key"] != config_key(config):
        return None
    heads = [HeadFigures(int(h["seed"]), str(h["run_id"]), _floats(h.get("metrics", {})),
                         _float(h.get("seconds"))) for h in entry.get("heads", [])]  # fmt: skip
    summary = {m: Stats(_float(v[0]), _float(v[1]), int(v[2]))
               for m, v in entry.get("summary", {}).items()}  # fmt: skip
    return ArmResult(arm, config, str(entry.get("trunk", "")), entry.get("feature_set"), heads,
                     trunk_info=dict(entry.get("trunk_info", {})),
                     extraction=dict(entry.get("extraction", {})), summary=summary,
                     source=str(entry.get("source") or "recorded"))  # fmt: skip


def entry(result: ArmResult) -> dict[str, Any]:
    """Returns the record entry of an arm's result (JSON-ready; NaN written as null)."""
    out: dict[str, Any] = {
        "key": config_key(result.config),
        "source": result.source or "measured",
        "trunk": result.trunk,
        "trunk_info": _json(result.trunk_info),
        "feature_set": result.feature_set,
        "extraction": _json(result.extraction),
        "heads": [
            {
                "seed": h.seed,
                "run_id": h.run_id,
                "seconds": _json(h.seconds),
                "metrics": _json(h.metrics),
            }
            for h in result.heads
        ],  # fmt: skip
    }
    if result.summary:
        out["summary"] = {m: [_json(s.mean), _json(s.std), s.n] for m, s in result.summary.items()}
    return out


def write(path: Path, name: str, results: dict[str, ArmResult],
          kept: dict[str, dict[str, Any]] | None = None) -> Path:  # fmt: skip
    """Writes the record of ``results`` to ``path`` atomically, keeping the ``kept`` entries of
    arms not in ``results``; returns ``path``."""
    path = Path(path)
    arms = {a: e for a, e in (kept or {}).items() if a not in results}
    arms.update({a: entry(r) for a, r in results.items()})
    text = json.dumps({"experiment": name, "arms": dict(sorted(arms.items()))}, indent=1,
                      allow_nan=False)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
    return path


def _float(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _floats(d: dict[str, Any]) -> dict[str, float]:
    return {k: _float(v) for k, v in d.items()}


def _json(v: Any) -> Any:
    """Returns ``v`` with non-finite floats as None and numpy scalars as Python ones."""
    if isinstance(v, dict):
        return {str(k): _json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, str):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
