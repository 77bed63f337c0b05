"""The evaluate stage: score a trained head on a split, VOC AP tables, localisation maps.

Image scores are the paper's power mean over every window (the head's k, plus k = 1 and max for
comparison); AP in both VOC forms; pointing accuracy of the per-class score maps; optional PNG
overlays. Metrics go to the head's own MLflow run (``<split>_mAP`` ...), so promotion reads them
from there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlt.config import RunConfig
from mlt.evaluate import (
    APTable,
    PointingResult,
    ap_table,
    class_boxes,
    image_scores,
    k_name,
    overlay_png,
    pointing_accuracy,
    score_map,
)
from mlt.heads.data import WindowData, load_windows, split_image_ids

K_VARIANTS: tuple[float | str, ...] = (1.0, "max")


@dataclass
class Evaluation:
    """What evaluating a head on a split gives: AP tables, pointing accuracy, written overlays."""

    split: str
    k: float | str
    tables: dict[str, APTable]
    k_variants: dict[str, float]
    pointing: PointingResult | None = None
    overlays: list[Path] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Returns every figure as ``<split>_…`` metrics (mAP, mAP_area, per-class AP, pointing)."""
        s = self.split
        out = self.tables["voc07"].to_metrics(f"{s}_")
        out.update({f"{s}_mAP_area": self.tables["area"].mean_ap})
        out.update({f"{s}_mAP_k{name}": v for name, v in self.k_variants.items()})
        if self.pointing is not None:
            out.update(self.pointing.to_metrics(f"{s}_"))
        return out

    def format(self) -> str:
        """Returns the printable report: both AP tables, the k comparison and pointing accuracy."""
        parts = [f"{self.split}: image score = power mean over windows, k = {self.k}"]
        parts += [self.tables[f].format() for f in ("voc07", "area")]
        parts.append(
            "mAP (VOC07) by k: " + ", ".join(f"k={n}: {v:.4f}" for n, v in self.k_variants.items())
        )
        if self.pointing is not None:
            parts.append("pointing accuracy (score-map peak inside a box of the class):")
            parts.append(self.pointing.format())
        return "\n\n".join(parts)


def _per_image(data: WindowData, probs: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yields (image position, window boxes, class probabilities) per image of ``data``."""
    order = np.argsort(data.image_index, kind="stable")
    bounds = np.searchsorted(data.image_index[order], np.arange(data.n_images + 1))
    for i in range(data.n_images):
        rows = order[bounds[i] : bounds[i + 1]]
        yield i, data.boxes[rows], probs[rows, : data.num_classes]


def evaluate_windows(
    probs: np.ndarray, data: WindowData, classes: list[str], k: float | str, gt: np.ndarray,
    annotations: list | None = None, split: str = "test", overlay_dir: Path | None = None,
    n_overlays: int = 0, image_paths: list[str] | None = None,
) -> Evaluation:  # fmt: skip
    """Returns the Evaluation of window probabilities (R, C+1) of ``data``'s images.

    With ``annotations`` (one per image, in ``data.image_ids`` order) pointing accuracy is
    computed, and the first ``n_overlays`` images get a PNG per present class in ``overlay_dir``.
    """
    c = data.num_classes
    scores = image_scores(probs[:, :c], data.image_index, data.n_images, k)
    tables = {form: ap_table(scores, gt, classes, form) for form in ("voc07", "area")}
    variants = {}
    for kv in K_VARIANTS:
        s = image_scores(probs[:, :c], data.image_index, data.n_images, kv)
        variants[k_name(kv)] = ap_table(s, gt, classes, "voc07").mean_ap
    ev = Evaluation(split, k, tables, variants)
    if annotations is None:
        return ev
    per_image = list(_per_image(data, probs))
    ev.pointing = pointing_accuracy(
        (b for _, b, _ in per_image), (p for _, _, p in per_image), annotations, classes
    )
    if overlay_dir is not None and image_paths is not None:
        for i, boxes, p in per_image[:n_overlays]:
            ann = annotations[i]
            present = [ci for ci, b in enumerate(class_boxes(ann, classes)) if len(b)]
            maps = score_map(boxes, p[:, present], ann.width, ann.height) if present else []
            for smap, ci in zip(maps, present, strict=True):
                out = Path(overlay_dir) / f"{ann.image_id}_{classes[ci]}.png"
                ev.overlays.append(
                    overlay_png(image_paths[i], smap, out, boxes=class_boxes(ann, classes)[ci])
                )
    return ev


@dataclass
class ScoredSplit:
    """A trained head's window probabilities on a split, with what scoring them needs."""

    head: Any  # mlt.heads.artifact.SavedHead
    data: WindowData
    probs: np.ndarray  # (R, C+1)
    annotations: list
    gt: np.ndarray  # (N, C) devkit labels
    paths: list[str]
    boxed: bool

    @property
    def classes(self) -> list[str]:
        """Returns the head's class names."""
        return self.head.classes

    def mean_ap(self, k: float | str, form: str = "voc07") -> float:
        """Returns the mAP of the split's image scores at power-mean ``k`` (AP form ``form``)."""
        c = self.data.num_classes
        scores = image_scores(self.probs[:, :c], self.data.image_index, self.data.n_images, k)
        return ap_table(scores, self.gt, self.classes, form).mean_ap


def score_split(
    config: RunConfig, head_ref: str, split: str = "test", dataset_root: str | Path | None = None
) -> ScoredSplit:
    """Returns the head's window probabilities on ``split`` of its feature set, with labels.

    ``head_ref`` is a head.pt file, an MLflow run id or ``runs:/…`` URI (in the config's store).
    """
    from mlt.data.voc import VocDataset
    from mlt.evaluate import image_labels
    from mlt.heads.artifact import load_head
    from mlt.heads.model import window_probs
    from mlt.heads.run import cache_dir, open_feature_set

    if not Path(head_ref).is_file():
        from mlt import tracking

        tracking.setup_tracking(config)  # the head's run lives in the config's tracking store
    saved = load_head(head_ref)
    fs = open_feature_set(config, saved.feature_set)
    root = Path(dataset_root or saved.meta["dataset"])
    classes = saved.classes
    limit = config.data.target_limit or saved.meta.get("target_limit")
    ids = split_image_ids(root, split, limit)
    boxed = saved.meta.get("protocol") == "boxed"  # a head of a boxed set: windows are the items
    if boxed:
        from mlt.heads.boxed import boxed_image_ids

        ids = boxed_image_ids(fs, root, ids, classes)
    data = load_windows(fs, ids, saved.meta["layer"], cache_dir(config), what=f"split {split}")
    ds = VocDataset(root)
    annotations = [ds.annotation(i) for i in data.image_ids]
    probs = window_probs(saved.model, data.features).numpy()
    paths = [str(ds.image_path(a.image_id, a.filename)) for a in annotations]
    return ScoredSplit(
        saved, data, probs, annotations, image_labels(annotations, classes), paths, boxed
    )


def run_evaluate(
    config: RunConfig, head_ref: str, split: str = "test", dataset_root: str | Path | None = None,
    k: float | str | None = None, overlay_dir: str | Path | None = None, n_overlays: int = 8,
    log: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Evaluates a trained head on ``split``; logs to its MLflow run; returns a summary."""
    sc = score_split(config, head_ref, split, dataset_root)
    k = sc.head.meta.get("k", config.eval.k) if k is None else k
    if sc.boxed:
        from mlt.heads.boxed import evaluate_boxed

        ev = evaluate_boxed(sc.probs, sc.data, sc.classes, split)
    else:
        ev = evaluate_windows(
            sc.probs, sc.data, sc.classes, k, sc.gt, sc.annotations, split,
            Path(overlay_dir) if overlay_dir else None, n_overlays, sc.paths,
        )  # fmt: skip
    run_id = None
    if log and not Path(head_ref).is_file():
        run_id = _log(config, head_ref, ev)
    return {
        "head": head_ref,
        "run_id": run_id,
        "split": split,
        "k": k,
        "mAP": ev.tables["voc07"].mean_ap,
        "mAP_area": ev.tables["area"].mean_ap,
        "pointing": ev.pointing.mean_accuracy if ev.pointing else None,
        "overlays": [str(p) for p in ev.overlays],
        "report": ev.format(),
    }


def _log(config: RunConfig, head_ref: str, ev: Evaluation) -> str:
    """Logs the evaluation into the head's run; returns its id."""
    import mlflow

    from mlt import tracking

    run_id = head_ref.split("/")[1] if head_ref.startswith("runs:/") else head_ref
    with tracking.run(config, "", "evaluate", run_id=run_id, system_metrics=False):
        tracking.log_metrics(ev.metrics())
        mlflow.log_text(ev.format(), f"tables/{ev.split}.txt")
        for p in ev.overlays:
            mlflow.log_artifact(str(p), f"maps/{ev.split}")
    return run_id
