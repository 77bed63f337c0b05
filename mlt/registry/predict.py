"""Serving a registered complete model: class scores, top classes and score maps of any image.

:func:`load_registered` takes a ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``,
``runs:/RUN/complete_model``) URI, resolves it in the configured tracking server or SQLite
store, downloads the model and reads its ``complete.pt`` with ``weights_only=True``: the
pyfunc's pickled ``python_model.pkl`` is never loaded here, and no path or foreign URI is
accepted, so nothing outside the configured registry is ever deserialised.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mlt.config import RunConfig
from mlt.decode import decode_image
from mlt.errors import InputError
from mlt.evaluate import overlay_png, score_map
from mlt.registry.model import FILE_NAME, CompleteModel, load_complete

URI_SCHEMES = ("models:/", "runs:/")


def load_registered(config: RunConfig, uri: str) -> CompleteModel:
    """Returns the complete model ``uri`` names in the configured registry (weights-only read)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from mlt import tracking

    if not uri.startswith(URI_SCHEMES):
        raise InputError(None, "--model", uri,
                         "a models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN/complete_model URI"
                         " of the configured registry (models are loaded from nowhere else)")  # fmt: skip
    tracking.setup_tracking(config)
    where = mlflow.get_tracking_uri()
    dst = tempfile.mkdtemp(prefix="mlt-model-")
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst))
    except MlflowException as e:
        raise InputError(None, "--model", uri,
                         f"a registered complete model in {tracking.redact(where)} ({e.message})") from None  # fmt: skip
    found = [local] if local.is_file() else sorted(local.rglob(FILE_NAME))
    if not found:
        raise InputError(None, "--model", uri, f"an mlt complete model (no {FILE_NAME} in it)")
    return load_complete(found[0])


def check_images(images: Sequence[str]) -> None:
    """Raises InputError naming every image file that does not exist (before any work starts)."""
    if not images:
        raise InputError(None, "IMAGE", "nothing", "one or more image files")
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise InputError(missing[0], "IMAGE", missing, "existing image files", kind="missing image")


def _json_ready(pred: dict[str, Any]) -> dict[str, Any]:
    return {
        "image": pred["image"], "width": pred["width"], "height": pred["height"],
        "windows": pred["windows"], "scores": pred["scores"],
        "top": [{"class": c, "score": s} for c, s in pred["top"]],
    }  # fmt: skip


def predict_images(
    model: CompleteModel, images: Sequence[str], top: int = 3, maps_dir: str | Path | None = None,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Yields one JSON-able prediction per image (scores, top classes, written map files).

    With ``maps_dir`` each image's top classes get a score-map PNG overlay
    ``<stem>_<class>.png`` (each pixel: the mean probability of the windows covering it).
    """
    used: set[str] = set()
    for i, image in enumerate(images):
        pixels = decode_image(image)  # names a missing or broken file
        pred = model.predict(pixels, top=top)
        pred["image"] = str(image)
        out = _json_ready(pred)
        if maps_dir is not None:
            out["maps"] = []
            stem = Path(image).stem
            if stem in used:
                stem = f"{stem}-{i}"
            used.add(stem)
            index = {c: j for j, c in enumerate(model.classes)}
            for cls, _ in pred["top"]:
                smap = score_map(pred["boxes"], pred["probs"][:, index[cls]], pred["width"], pred["height"])  # fmt: skip
                path = overlay_png(pixels, smap, Path(maps_dir) / f"{stem}_{cls}.png")
                out["maps"].append(str(path))
        yield out
