"""The paper's transfer head: FCa (ReLU, dropout) and FCb (softmax over the classes + background)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Head(nn.Module):
    """FCa → ReLU → dropout → FCb over cached trunk features; ``forward`` returns logits (B, C+1)."""

    def __init__(self, in_dim: int, num_classes: int, fca_width: int = 2048, dropout: float = 0.5):
        super().__init__()
        self.in_dim, self.num_classes = int(in_dim), int(num_classes)
        self.fca_width, self.dropout_p = int(fca_width), float(dropout)
        self.fca = nn.Linear(self.in_dim, self.fca_width)
        self.dropout = nn.Dropout(self.dropout_p)
        self.fcb = nn.Linear(self.fca_width, self.num_classes + 1)
        for layer in (self.fca, self.fcb):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fcb(self.dropout(torch.relu(self.fca(x.float()))))

    def spec(self) -> dict:
        """Returns the constructor arguments, so ``Head(**spec)`` rebuilds the architecture."""
        return {
            "in_dim": self.in_dim,
            "num_classes": self.num_classes,
            "fca_width": self.fca_width,
            "dropout": self.dropout_p,
        }


@torch.inference_mode()
def window_probs(model: nn.Module, features, batch_size: int = 8192) -> torch.Tensor:
    """Returns softmax probabilities (R, C+1) float32 of every row of ``features`` (eval mode)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(features), batch_size):
        x = torch.from_numpy(_rows(features, start, batch_size))
        out.append(torch.softmax(model(x), dim=1))
    model.train(was_training)
    if not out:
        return torch.zeros(0, getattr(model, "num_classes", 0) + 1)
    return torch.cat(out)


def _rows(features: np.ndarray, start: int, n: int) -> np.ndarray:
    return np.ascontiguousarray(features[start : start + n], dtype=np.float32)
