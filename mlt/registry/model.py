"""A complete model: trunk + head + window grid + k + class names + input size and normalisation.

:class:`CompleteModel` scores an image of any size the way the pipeline scores a test image: the
paper's window grid over the image, every window through the frozen trunk (``crop`` or ``conv``
mode, by :class:`mlt.extract.Featurizer`, the code that made the feature set), the head's
softmax per window, and the power-k mean over the windows per class. It needs nothing but
itself, so ``predict`` serves it as it is.

On disk it is one ``complete.pt`` read with ``torch.load(weights_only=True)``: weights, the
trunk's and head's constructor specs, and the settings above, never pickled code. Pure torch:
MLflow lives in :mod:`mlt.registry.pyfunc`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mlt.checkpoint import read_checkpoint
from mlt.decode import decode_image
from mlt.decode.images import ImageSource
from mlt.errors import InputError
from mlt.evaluate import power_mean
from mlt.extract import Featurizer
from mlt.heads.model import window_probs
from mlt.windows import window_grid

FORMAT = "mlt-complete/1"
FILE_NAME = "complete.pt"


class CompleteModel(nn.Module):
    """Trunk + head + grid + k: ``predict(image)`` gives class scores of an image of any size.

    ``scales`` / ``stride_fraction`` are the window grid's (:func:`mlt.windows.window_grid`),
    ``layer`` the trunk layer the head reads, ``mode`` / ``conv_passes`` how the trunk sees the
    windows (as at extraction), ``k`` the power of the window mean (a number or ``"max"``).
    ``lineage`` (trunk run, feature set, head run, dataset digest, commit) travels with it.
    """

    def __init__(
        self, trunk: nn.Module, head: nn.Module, classes: Sequence[str], k: float | str,
        layer: str = "fc7", scales: Sequence[float] = (1.0,), stride_fraction: float = 1 / 3,
        mode: str = "crop", conv_passes: int = 1, lineage: dict[str, Any] | None = None,
        backend: str = "reference", batch_size: int = 256,
    ) -> None:  # fmt: skip
        super().__init__()
        num = getattr(head, "num_classes", None) or getattr(getattr(head, "head", None), "num_classes", None)  # fmt: skip
        if num is not None and num != len(classes):
            raise InputError(None, "classes", list(classes), f"{num} names, one per head output")
        if layer not in getattr(trunk, "feature_dims", {}):
            raise InputError(None, "layer", layer, f"a layer of the trunk {sorted(trunk.feature_dims)}")  # fmt: skip
        self.trunk, self.head = trunk.eval(), head.eval()
        self.classes = [str(c) for c in classes]
        self.k = k if k == "max" else float(k)
        self.layer = layer
        self.scales = tuple(float(s) for s in scales)
        self.stride_fraction = float(stride_fraction)
        self.mode, self.conv_passes = mode, int(conv_passes)
        self.lineage = dict(lineage or {})
        self.backend, self.batch_size = backend, int(batch_size)
        window_grid(1, 1, self.scales, self.stride_fraction)  # checks the grid settings now
        self._featurizer: Featurizer | None = None

    @property
    def input_size(self) -> int:
        """Returns the side in pixels each window is resized to before the trunk."""
        return int(self.trunk.input_size)

    @property
    def mean(self) -> tuple[float, ...]:
        """Returns the per-channel mean subtracted from 0..1 RGB pixels."""
        return tuple(float(v) for v in self.trunk.mean)

    @property
    def std(self) -> tuple[float, ...]:
        """Returns the per-channel std dividing 0..1 RGB pixels."""
        return tuple(float(v) for v in self.trunk.std)

    def settings(self) -> dict[str, Any]:
        """Returns everything but the weights: classes, k, layer, grid, mode, preprocessing, lineage."""
        return {
            "classes": list(self.classes), "k": self.k, "layer": self.layer,
            "grid": {"scales": list(self.scales), "stride_fraction": self.stride_fraction},
            "mode": self.mode, "conv_passes": self.conv_passes,
            "preprocessing": {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std)},
            "lineage": dict(self.lineage),
        }  # fmt: skip

    def featurizer(self) -> Featurizer:
        """Returns the trunk's window featurizer (made once; the extraction code, not a copy)."""
        if self._featurizer is None:
            self._featurizer = Featurizer(
                self.trunk, [self.layer], self.mode, self.backend, self.batch_size,
                conv_passes=self.conv_passes,
            )  # fmt: skip
        return self._featurizer

    @torch.inference_mode()
    def window_probs(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns (boxes (M, 4) float32, class probabilities (M, C) float32) of the image's windows."""
        h, w = pixels.shape[:2]
        grid = window_grid(w, h, self.scales, self.stride_fraction)
        boxes = grid.boxes.astype(np.float32)
        scale = np.asarray(grid.scales, dtype=np.float32)[grid.scale_index]
        feats = self.featurizer()(pixels, boxes, scale)[self.layer]
        probs = window_probs(self.head, feats).numpy()
        return boxes, probs[:, : len(self.classes)]

    def forward(self, image: ImageSource) -> torch.Tensor:
        """Returns the (C,) float64 class scores of one image (a path, encoded bytes or an RGB array)."""
        return torch.from_numpy(self.predict(image)["score_array"])

    def predict(self, image: ImageSource, top: int = 3) -> dict[str, Any]:
        """Returns one image's prediction: ``scores`` {class: score}, ``top`` [(class, score)],
        ``score_array`` (C,), and the windows' ``boxes`` (M, 4) and ``probs`` (M, C) for maps.

        ``image`` is a path, encoded bytes, or an ``H x W x 3`` uint8 RGB array, of any size.
        """
        pixels = decode_image(image)
        boxes, probs = self.window_probs(pixels)
        scores = power_mean(probs, self.k)
        order = np.argsort(-scores, kind="stable")[: max(0, int(top))]
        name = str(image) if isinstance(image, str | PathLike) else None
        return {
            "image": name, "width": int(pixels.shape[1]), "height": int(pixels.shape[0]),
            "windows": len(boxes), "scores": dict(zip(self.classes, scores.tolist(), strict=True)),
            "top": [(self.classes[i], float(scores[i])) for i in order], "score_array": scores,
            "boxes": boxes, "probs": probs,
        }  # fmt: skip


def _trunk_record(trunk: nn.Module) -> dict[str, Any]:
    from mlt.models import AlexNet

    if not isinstance(trunk, AlexNet):
        raise InputError(
            None, "trunk", type(trunk).__name__, "an AlexNet-family trunk (mlt.models)"
        )
    spec = dataclasses.asdict(trunk.spec)
    return {"kind": "alexnet", "spec": spec, "num_classes": trunk.num_classes, "state": trunk.state_dict()}  # fmt: skip


def save_complete(path: str | PathLike, model: CompleteModel) -> Path:
    """Writes the complete model to ``path`` atomically (weights-only loadable); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    data = {
        "format": FORMAT, "trunk": _trunk_record(model.trunk),
        "head": {"spec": model.head.spec(), "state": model.head.state_dict()},
        "settings": model.settings(),
    }  # fmt: skip
    torch.save(data, tmp)
    tmp.replace(path)
    return path


def load_complete(path: str | PathLike, backend: str = "reference") -> CompleteModel:
    """Returns the complete model in ``path`` (read with ``weights_only=True``: no code runs)."""
    from mlt.heads.unfrozen import head_from_spec
    from mlt.models import AlexNet, AlexNetSpec

    data = read_checkpoint(path)
    if data.get("format") != FORMAT:
        raise InputError(path, "format", data.get("format"), f"an mlt complete model ({FORMAT})")
    t, s = data["trunk"], data["settings"]
    trunk = AlexNet(AlexNetSpec(**t["spec"]), int(t["num_classes"]))
    trunk.load_state_dict(t["state"])
    head = head_from_spec(data["head"]["spec"])
    head.load_state_dict(data["head"]["state"])
    return CompleteModel(
        trunk, head, s["classes"], s["k"], s["layer"], s["grid"]["scales"],
        s["grid"]["stride_fraction"], s["mode"], s["conv_passes"], s["lineage"], backend,
    )  # fmt: skip
