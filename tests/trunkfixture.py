"""A small random-weight alexnet-small trunk checkpoint for tests that extract features."""

from __future__ import annotations

from pathlib import Path

import torch

from mlt.models import create_model


def tiny_trunk(path: Path, seed: int = 0, classes: str = "abcde") -> Path:
    """Returns ``path`` after saving there an mlt trunk checkpoint of a seeded alexnet-small."""
    torch.manual_seed(seed)
    model = create_model("alexnet-small", num_classes=len(classes))
    torch.save(
        {"model": model.state_dict(), "model_name": "alexnet-small", "classes": list(classes)}, path
    )
    return path
