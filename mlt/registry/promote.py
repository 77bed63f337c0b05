"""The promotion gate: register a head run's complete model, move ``@champion`` only on merit.

``promote`` checks the head run first and refuses (registering nothing) when its lineage is
incomplete (the missing tag is named), the feature set it was trained on fails
``FeatureSet.verify()``, or it has no figure for the gate metric. Otherwise it logs the complete
model into the head run, registers it as a new version with alias ``@challenger``, and moves
``@champion`` to it only when its metric beats the champion's by at least ``min_delta``
(strictly better; a tie keeps the champion), or when there is no champion yet. Higher is
better. Every decision is written on the version (``mlt.promotion.*`` tags and its
description) and a replaced champion is tagged with its successor, so the registry UI shows the
history. Aliases only: model stages are deprecated in MLflow.
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlt.config import RunConfig
from mlt.errors import InputError, MltError
from mlt.registry.pyfunc import (
    HEAD_RUN_TAGS,
    LINEAGE_REQUIRED,
    assemble,
    log_complete_model,
    run_id_of,
)

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG = "mlt.promotion."
DEFAULT_METRIC = "test_mAP"
MODEL_DESCRIPTION = (
    "mlt complete models (trunk + head + window grid + k + classes + preprocessing), registered"
    " by `mlt promote`. @champion is served by `mlt predict`; @challenger is the latest"
    " candidate. Each version's description and mlt.promotion.* tags record its gate decision."
)


class PromotionRefused(MltError):
    """A head run that cannot be registered: incomplete lineage, a bad feature set, no figure."""


@dataclass
class Decision:
    """One gate decision: the new version, the two figures and whether ``@champion`` moved."""

    name: str
    version: str
    accepted: bool
    metric: str
    value: float
    champion_version: str | None
    champion_value: float | None
    min_delta: float
    reason: str
    head_run: str
    model_uri: str

    def format(self) -> str:
        """Returns the printable decision with both figures."""
        champ = (
            "none"
            if self.champion_version is None
            else f"v{self.champion_version} {_fig(self.champion_value)}"
        )
        verdict = (
            f"ACCEPTED: @champion -> v{self.version}"
            if self.accepted
            else f"REFUSED: @champion stays on v{self.champion_version}"
            if self.champion_version
            else "REFUSED: no @champion set"
        )
        return (
            f"{self.name} v{self.version} (head run {self.head_run}) @challenger\n"
            f"  {self.metric}: candidate {_fig(self.value)}, champion {champ}, min-delta {self.min_delta:g}\n"
            f"  {verdict}; {self.reason}"
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """Returns the decision as a JSON-able dict."""
        return asdict(self)


def _fig(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def gate(value: float, champion: float | None, min_delta: float = 0.0) -> tuple[bool, str]:
    """Returns (accept, reason): accept when there is no champion, or ``value`` beats it strictly
    and by at least ``min_delta`` (higher is better)."""
    if min_delta < 0 or not math.isfinite(min_delta):
        raise InputError(None, "--min-delta", min_delta, "a finite number >= 0")
    if not math.isfinite(value):
        return False, f"the candidate's figure is {value}"
    if champion is None:
        return True, "no champion yet"
    delta = value - champion
    if delta > 0 and delta >= min_delta:
        return True, f"beats the champion by {delta:+.4f}"
    if delta <= 0:
        return False, f"does not beat the champion: {delta:+.4f}"
    return False, f"beats the champion by {delta:+.4f}, less than min-delta {min_delta:g}"


def _get_run(client: MlflowClient, run_id: str):
    try:
        return client.get_run(run_id)
    except MlflowException as e:
        raise InputError(
            None, "--run", run_id, f"the run id of a head in {client.tracking_uri} ({e.message})"
        ) from None


def check_head_run(config: RunConfig, client: MlflowClient, run_id: str, metric: str):
    """Returns (run, metric value, feature set) of a promotable head run; PromotionRefused else."""
    from mlt.heads.run import open_feature_set

    run = _get_run(client, run_id)
    tags = run.data.tags
    missing = [t for t in HEAD_RUN_TAGS if not tags.get(t) or tags.get(t) == "None"]
    if missing:
        raise PromotionRefused(
            f"head run {run_id}: incomplete lineage, missing tag {', '.join(missing)}"
            " (a trunk from a checkpoint file has no run: extract with the trunk's MLflow run"
            " id from `mlt pretrain` to register)"
        )
    value = run.data.metrics.get(metric)
    if value is None:
        have = ", ".join(sorted(m for m in run.data.metrics if m.endswith("mAP"))) or "none"
        raise PromotionRefused(
            f"head run {run_id} has no metric {metric!r} (mAP metrics present: {have});"
            f" score it first: mlt evaluate --head {run_id}"
        )
    fs = open_feature_set(config, tags["mlt.featureset.id"])
    problems = fs.verify()
    if problems:
        shown = "; ".join(str(p) for p in problems[:3])
        raise PromotionRefused(
            f"feature set {fs.id} of head run {run_id} fails verification"
            f" ({len(problems)} problem(s)): {shown}"
        )
    return run, float(value), fs


def _check_lineage(run, lineage: dict[str, str]) -> None:
    missing = [t for t in LINEAGE_REQUIRED if not lineage.get(t)]
    if missing:
        raise PromotionRefused(
            f"head run {run.info.run_id}: incomplete lineage, missing tag {', '.join(missing)}"
        )
    for tag in ("mlt.featureset.id", "mlt.trunk.digest", "mlt.dataset.digest"):
        if run.data.tags.get(tag) != lineage.get(tag):
            raise PromotionRefused(
                f"head run {run.info.run_id}: tag {tag} = {run.data.tags.get(tag)!r} but its head"
                f" file and feature set say {lineage.get(tag)!r}"
            )


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name, tags={"mlt.kind": "complete"}, description=MODEL_DESCRIPTION)  # fmt: skip


def alias_version(client: MlflowClient, name: str, alias: str):
    """Returns the version holding ``alias`` of registered model ``name``, or None."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def version_figure(client: MlflowClient, version, metric: str) -> float | None:
    """Returns a version's figure for ``metric``: recorded at its promotion, else its run's."""
    recorded = version.tags.get(f"{TAG}{metric}")
    if recorded is not None:
        return float(recorded)
    if version.run_id:
        try:
            value = client.get_run(version.run_id).data.metrics.get(metric)
        except MlflowException:
            return None
        return None if value is None else float(value)
    return None


def _append(text: str | None, line: str) -> str:
    return f"{text.rstrip()}\n{line}" if text else line


def promote(
    config: RunConfig,
    head_ref: str,
    name: str,
    metric: str = DEFAULT_METRIC,
    min_delta: float = 0.0,
) -> Decision:
    """Registers a head run's complete model as ``name``'s new ``@challenger``, moves
    ``@champion`` when the gate passes; returns the decision (recorded on the version)."""
    import mlflow

    from mlt import tracking

    gate(0.0, None, min_delta)  # checks min_delta before anything is logged
    tracking.setup_tracking(config)
    client = MlflowClient()
    run_id = run_id_of(head_ref)
    run, value, _ = check_head_run(config, client, run_id, metric)
    a = assemble(config, run_id)
    _check_lineage(run, a.lineage)
    with contextlib.redirect_stdout(
        sys.stderr
    ):  # MLflow prints run links: stdout is the decision's
        logged = log_complete_model(config, run_id, a)
    _ensure_registered_model(client, name)
    tags = {**a.lineage, f"{TAG}{metric}": repr(value)}
    mv = mlflow.register_model(logged.model_uri, name, tags=tags)
    version = str(mv.version)
    champion = alias_version(client, name, CHAMPION)
    champ_value = None if champion is None else version_figure(client, champion, metric)
    if champion is not None and champ_value is None:
        accepted, reason = False, f"champion v{champion.version} has no {metric} to compare with"
    else:
        accepted, reason = gate(value, champ_value, min_delta)
    client.set_registered_model_alias(name, CHALLENGER, version)
    if accepted:
        client.set_registered_model_alias(name, CHAMPION, version)
    decision = Decision(
        name, version, accepted, metric, value, None if champion is None else str(champion.version),
        champ_value, float(min_delta), reason, run_id, f"models:/{name}/{version}",
    )  # fmt: skip
    _record(client, decision, champion)
    return decision


def _record(client: MlflowClient, d: Decision, champion) -> None:
    """Writes the decision on the new version (tags, description) and on a replaced champion."""
    when = datetime.now(UTC).isoformat(timespec="seconds")
    tags = {
        "decision": "champion" if d.accepted else "refused", "reason": d.reason, "metric": d.metric,
        "value": repr(d.value), "champion_version": d.champion_version or "",
        "champion_value": "" if d.champion_value is None else repr(d.champion_value),
        "min_delta": repr(d.min_delta), "time": when,
    }  # fmt: skip
    for key, value in tags.items():
        client.set_model_version_tag(d.name, d.version, f"{TAG}{key}", value)
    line = d.format().replace("\n", " ").replace("  ", " ")
    client.update_model_version(d.name, d.version, description=f"{when} promote: {line}")
    if d.accepted and champion is not None:
        client.set_model_version_tag(d.name, str(champion.version), f"{TAG}replaced_by", d.version)
        client.update_model_version(
            d.name, str(champion.version),
            description=_append(champion.description, f"{when} replaced as @champion by v{d.version}"
                                f" ({d.metric} {_fig(d.value)} vs {_fig(d.champion_value)})"),
        )  # fmt: skip
