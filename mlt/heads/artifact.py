"""A trained head on disk: weights, architecture and everything needed to score with it.

``head.pt`` holds the state dict, the constructor spec, the class names, k, the layer, and the
lineage (feature set id, trunk digest and run, dataset digest). ``mlt train-head`` logs it as the
MLflow artifact ``head/head.pt``; :func:`load_head` takes the file, a run id or a ``runs:/`` URI.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mlt.checkpoint import read_checkpoint
from mlt.errors import InputError
from mlt.heads.model import Head

ARTIFACT_PATH = "head"
FILE_NAME = "head.pt"
FORMAT = "mlt-head/1"


@dataclass
class SavedHead:
    """A loaded head: the module in eval mode and its metadata (classes, k, layer, lineage)."""

    model: torch.nn.Module
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def classes(self) -> list[str]:
        """Returns the target class names, in output order."""
        return list(self.meta["classes"])

    @property
    def feature_set(self) -> str:
        """Returns the id of the feature set the head was trained on."""
        return str(self.meta["feature_set"])


def save_head(path: str | Path, model: Head, meta: dict[str, Any]) -> Path:
    """Writes ``model`` and ``meta`` to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(
        {"format": FORMAT, "spec": model.spec(), "state": model.state_dict(), "meta": meta}, tmp
    )
    tmp.replace(path)
    return path


def load_head(ref: str | Path) -> SavedHead:
    """Returns the head named by ``ref``: a ``head.pt`` file, an MLflow run id or ``runs:/ID``."""
    path = Path(ref)
    if not path.is_file():
        path = _download(str(ref))
    data = read_checkpoint(path)
    if data.get("format") != FORMAT:
        raise InputError(path, "format", data.get("format"), f"an mlt head file ({FORMAT})")
    from mlt.heads.unfrozen import head_from_spec

    model = head_from_spec(data["spec"])  # a Head, or an UnfrozenHead (spec kind "unfrozen")
    model.load_state_dict(data["state"])
    return SavedHead(model.eval(), data["meta"], str(ref))


def _download(ref: str) -> Path:
    import mlflow

    run_id = ref.split("/")[1] if ref.startswith("runs:/") else ref
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=f"{ARTIFACT_PATH}/{FILE_NAME}", dst_path=tempfile.mkdtemp(prefix="mlt-head-")
        )  # fmt: skip
    except Exception as e:  # mlflow raises several types for a missing run or artifact
        raise InputError(
            None, "--head", ref, f"a head.pt file or the run id of `mlt train-head` ({e})"
        ) from None
    return Path(local)
