"""The complete model in MLflow: built from a head run, logged as a pyfunc model with lineage.

:func:`assemble` builds a :class:`~mlt.registry.model.CompleteModel` from a head run: the head
artifact (``head/head.pt``), the feature set it was trained on (window grid, mode, input size
and normalisation) and the trunk that set was extracted with (``info.trunk_source`` of its
meta.json, checked against the set's trunk digest). :func:`log_complete_model` logs it into the
head run as the MLflow model ``complete_model``: a :class:`CompletePyfunc` with a signature
(input: a string column ``image`` holding a file path or base64 image bytes; output: one double
column per class) and an input example, the weights in ``artifacts/complete.pt``.

Loading a pyfunc model unpickles ``python_model.pkl``: load only models of the configured
registry (``mlt predict`` refuses anything else and reads ``complete.pt`` weights-only).
"""

from __future__ import annotations

import base64
import binascii
import io
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from featurestore import FeatureSet
from mlt.config import RunConfig
from mlt.errors import InputError
from mlt.registry.model import FILE_NAME, CompleteModel, load_complete, save_complete

MODEL_NAME = "complete_model"
ARTIFACT_KEY = "complete"
IMAGE_COLUMN = "image"
#: Lineage tags of a complete model (on its version); all but the commit must be known.
LINEAGE_REQUIRED = ("mlt.trunk.run", "mlt.featureset.id", "mlt.head.run", "mlt.dataset.digest")
#: The head run's own lineage tags, which `mlt train-head` sets, and must be present.
HEAD_RUN_TAGS = ("mlt.featureset.id", "mlt.trunk.digest", "mlt.trunk.run", "mlt.dataset.digest")


@dataclass
class Assembly:
    """A complete model built from a head run, with its lineage and the feature set behind it."""

    model: CompleteModel
    lineage: dict[str, str]
    fs: FeatureSet
    head_run: str


def run_id_of(ref: str) -> str:
    """Returns the run id of ``ref``: a run id or ``runs:/ID[/path]``."""
    return ref.split("/")[1] if ref.startswith("runs:/") else ref


def git_commit() -> tuple[str, bool | None]:
    """Returns (``git rev-parse HEAD`` of the code's checkout or "unknown", dirty tree or None)."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=20)  # fmt: skip
        if out.returncode != 0 or not out.stdout.strip():
            return "unknown", None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20)  # fmt: skip
        return out.stdout.strip(), bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def trunk_of(fs: FeatureSet):
    """Returns the trunk (:class:`mlt.extract.Trunk`) ``fs`` was extracted with, digest checked."""
    from mlt.extract import load_trunk

    meta_file = fs.path / "meta.json"
    info = fs.meta.get("info", {})
    source = info.get("trunk_source")
    is_uri = str(source).startswith(("runs:/", "models:/"))
    if source and not is_uri and not Path(source).exists() and info.get("trunk_run"):
        source = info["trunk_run"]  # the checkpoint file is gone; its run still has the trunk
    if not source:
        raise InputError(meta_file, "info.trunk_source", source, "the trunk the set came from")
    trunk = load_trunk(source)
    expected = fs.meta.get("inputs", {}).get("trunk_digest")
    if trunk.digest != expected:
        raise InputError(
            source, "trunk weights", trunk.digest[:12],
            f"the weights feature set {fs.id} was extracted with (digest {str(expected)[:12]}…)",
        )  # fmt: skip
    return trunk


def assemble(config: RunConfig, head_ref: str) -> Assembly:
    """Returns the complete model of a head run (or ``head.pt``) with its lineage tags."""
    from mlt import tracking
    from mlt.heads.artifact import load_head
    from mlt.heads.run import open_feature_set

    if not Path(head_ref).is_file():
        tracking.setup_tracking(config)
    saved = load_head(head_ref)
    fs = open_feature_set(config, saved.feature_set)
    inputs, info = fs.meta.get("inputs", {}), fs.meta.get("info", {})
    meta_file = fs.path / "meta.json"
    grid = inputs.get("grid", {})
    if "scales" not in grid:
        raise InputError(
            meta_file, "inputs.grid", grid,
            "the paper's window grid (a head of a windows.grid=boxed set scores given object"
            " boxes, which an image alone does not have)",
        )  # fmt: skip
    trunk = trunk_of(fs)
    pre = inputs.get("preprocessing", {})
    m = trunk.model
    if (pre.get("input_size"), list(pre.get("mean", [])), list(pre.get("std", []))) != (
        m.input_size, list(m.mean), list(m.std)
    ):  # fmt: skip
        raise InputError(meta_file, "inputs.preprocessing", pre,
                         f"the trunk's input size {m.input_size}, mean {m.mean}, std {m.std}")  # fmt: skip
    commit, dirty = git_commit()
    head_run = "" if Path(head_ref).is_file() else run_id_of(head_ref)
    lineage = {
        "mlt.trunk.run": info.get("trunk_run") or saved.meta.get("trunk_run") or "",
        "mlt.trunk.digest": inputs.get("trunk_digest") or "",
        "mlt.featureset.id": fs.id,
        "mlt.head.run": head_run,
        "mlt.dataset.digest": inputs.get("dataset_digest") or "",
        "mlt.git.commit": commit,
    }
    if dirty is not None:
        lineage["mlt.git.dirty"] = str(dirty).lower()
    model = CompleteModel(
        m, saved.model, saved.classes, saved.meta.get("k", config.eval.k), saved.meta["layer"],
        grid["scales"], grid["stride_fraction"], inputs.get("mode", "crop"),
        inputs.get("conv_passes", 1), lineage,
    )  # fmt: skip
    return Assembly(model, lineage, fs, head_run)


def image_source(value: Any) -> str | bytes:
    """Returns an image source from a cell of the ``image`` column: a file path or decoded base64."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    text = str(value)
    try:
        if Path(text).is_file():
            return text
    except (OSError, ValueError):  # base64 text is no usable path (too long, NUL, ...)
        pass
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        shown = text if len(text) <= 200 else text[:200] + "…"
        raise InputError(shown, IMAGE_COLUMN, shown, "an existing image file or base64 image bytes",
                         kind="missing image") from None  # fmt: skip


def example_image(width: int = 48, height: int = 40) -> bytes:
    """Returns a small JPEG (a colour gradient) for the model's input example."""
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class CompletePyfunc(mlflow.pyfunc.PythonModel):
    """The MLflow face of a complete model: a DataFrame of images in, class scores out."""

    def load_context(self, context) -> None:
        self.model = load_complete(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """Returns a DataFrame with one row per image and one score column per class."""
        cells = _image_cells(model_input)
        rows = [self.model.predict(image_source(v), top=0)["score_array"] for v in cells]
        data = np.stack(rows) if rows else np.zeros((0, len(self.model.classes)))
        return pd.DataFrame(data, columns=self.model.classes)


def _image_cells(model_input) -> list:
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise InputError(None, "model input", list(model_input.columns),
                             f"a DataFrame with a string column {IMAGE_COLUMN!r}")  # fmt: skip
        return model_input[IMAGE_COLUMN].tolist()
    if isinstance(model_input, dict):
        value = model_input.get(IMAGE_COLUMN)
        return list(value) if isinstance(value, list | tuple | np.ndarray) else [value]
    if isinstance(model_input, str | bytes):
        return [model_input]
    return list(model_input)


def signature(classes: list[str]):
    """Returns the model signature: a string column ``image`` in, a double per class out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", IMAGE_COLUMN)]),
        outputs=Schema([ColSpec("double", c) for c in classes]),
    )


def _requirements() -> list[str]:
    import PIL
    import simplejpeg

    pins = {"torch": torch.__version__, "mlflow": mlflow.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "pillow": PIL.__version__, "simplejpeg": simplejpeg.__version__}  # fmt: skip
    return [f"{name}=={version}" for name, version in pins.items()]


@dataclass
class LoggedComplete:
    """A complete model logged to MLflow: its URI, the head run it went into and its lineage."""

    model_uri: str
    head_run: str
    lineage: dict[str, str]
    model: CompleteModel


def log_complete_model(
    config: RunConfig, head_ref: str, assembly: Assembly | None = None
) -> LoggedComplete:
    """Logs the complete model of a head run into that run (model ``complete_model``); returns it.

    The lineage tags (trunk run, feature-set id, head run, dataset digest, git commit) go on the
    head run and with the model; the settings (classes, k, grid, preprocessing) into MLmodel.
    """
    from mlt import tracking

    a = assembly or assemble(config, head_ref)
    if not a.head_run:
        raise InputError(head_ref, "--run", head_ref, "the MLflow run id of a head (a head run)")
    settings = a.model.settings()
    example = pd.DataFrame({IMAGE_COLUMN: [base64.b64encode(example_image()).decode()]})
    with tracking.run(config, "", "promote", run_id=a.head_run, system_metrics=False):
        tracking.set_tags(a.lineage)
        with tempfile.TemporaryDirectory(prefix="mlt-complete-") as tmp:
            path = save_complete(Path(tmp) / FILE_NAME, a.model)
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME, python_model=CompletePyfunc(), artifacts={ARTIFACT_KEY: str(path)},
                signature=signature(a.model.classes), input_example=example,
                pip_requirements=_requirements(), metadata={"mlt": settings},
            )  # fmt: skip
    return LoggedComplete(info.model_uri, a.head_run, a.lineage, a.model)
