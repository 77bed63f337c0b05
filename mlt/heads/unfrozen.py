"""Unfrozen fine-tuning from cached C5 features: trunk FC6 (and FC7) trained with FCa/FCb.

The paper's PRE-1512U retrains FC6 together with FCa/FCb (FC7 stays frozen). Everything below
FC6 is frozen in every variant, so the cached ``c5`` features of a feature set are all the input
needed and no convolution is recomputed. :class:`UnfrozenHead` is the trunk's ``fc6`` and
``fc7`` blocks (dropout, linear, ReLU, as in :class:`mlt.models.alexnet.AlexNet`), initialised
from the trunk's weights, followed by the usual :class:`~mlt.heads.model.Head`.

``unfreeze`` says which trunk blocks learn: ``"none"`` (both frozen: the frozen pipeline,
computed from C5), ``"fc6"`` or ``"fc6+fc7"``. A frozen block always runs in eval mode (no
dropout), so with ``"none"`` the head sees exactly the FC7 features extraction would have
stored; a learning block runs with the trunk's dropout in front of it, as in pretraining.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from mlt.errors import InputError
from mlt.heads.model import Head

UNFREEZE = ("none", "fc6", "fc6+fc7")
KIND = "unfrozen"


def _fc_block(cin: int, cout: int, dropout: float) -> nn.Sequential:
    """Returns dropout → linear → ReLU, named like the trunk's blocks so their weights load."""
    return nn.Sequential(
        OrderedDict(drop=nn.Dropout(dropout), linear=nn.Linear(cin, cout), relu=nn.ReLU())
    )


class UnfrozenHead(nn.Module):
    """C5 (B, c5_dim) → trunk FC6 → trunk FC7 → FCa/FCb; ``forward`` returns logits (B, C+1)."""

    def __init__(
        self,
        c5_dim: int,
        fc_width: int,
        num_classes: int,
        fca_width: int = 2048,
        dropout: float = 0.5,
        trunk_dropout: float = 0.5,
        unfreeze: str = "fc6",
    ) -> None:
        super().__init__()
        if unfreeze not in UNFREEZE:
            raise InputError(None, "head.unfreeze", unfreeze, f"one of {UNFREEZE}")
        self.c5_dim, self.fc_width = int(c5_dim), int(fc_width)
        self.trunk_dropout, self.unfreeze = float(trunk_dropout), unfreeze
        self.fc6 = _fc_block(self.c5_dim, self.fc_width, self.trunk_dropout)
        self.fc7 = _fc_block(self.fc_width, self.fc_width, self.trunk_dropout)
        self.head = Head(self.fc_width, num_classes, fca_width, dropout)
        for name in ("fc6", "fc7"):
            getattr(self, name).requires_grad_(name in self.learning())

    @property
    def num_classes(self) -> int:
        """Returns the number of target classes (FCb has one more output, background)."""
        return self.head.num_classes

    @property
    def in_dim(self) -> int:
        """Returns the input dimension: the flattened C5 feature."""
        return self.c5_dim

    def learning(self) -> tuple[str, ...]:
        """Returns the trunk blocks that learn: (), ("fc6",) or ("fc6", "fc7")."""
        return {"none": (), "fc6": ("fc6",), "fc6+fc7": ("fc6", "fc7")}[self.unfreeze]

    def train(self, mode: bool = True) -> UnfrozenHead:
        """Sets training mode; frozen trunk blocks stay in eval mode (returns self)."""
        super().train(mode)
        for name in ("fc6", "fc7"):
            if name not in self.learning():
                getattr(self, name).eval()
        return self

    def trunk_features(self, x: torch.Tensor) -> torch.Tensor:
        """Returns FC7 (after its ReLU) computed from C5 features ``x`` (B, c5_dim)."""
        return self.fc7(self.fc6(x.float()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk_features(x))

    def spec(self) -> dict[str, Any]:
        """Returns the constructor arguments plus ``kind``, so :func:`head_from_spec` rebuilds it."""
        return {
            "kind": KIND,
            "c5_dim": self.c5_dim,
            "fc_width": self.fc_width,
            "num_classes": self.head.num_classes,
            "fca_width": self.head.fca_width,
            "dropout": self.head.dropout_p,
            "trunk_dropout": self.trunk_dropout,
            "unfreeze": self.unfreeze,
        }

    @classmethod
    def from_trunk(
        cls,
        trunk: nn.Module,
        num_classes: int,
        fca_width: int = 2048,
        dropout: float = 0.5,
        unfreeze: str = "fc6",
    ) -> UnfrozenHead:
        """Returns a head whose FC6/FC7 are copies of ``trunk``'s (an AlexNet-family model)."""
        spec = trunk.spec
        head = cls(spec.c5_dim, spec.fc_width, num_classes, fca_width, dropout, spec.dropout,
                   unfreeze)  # fmt: skip
        head.fc6.load_state_dict(trunk.fc6.state_dict())
        head.fc7.load_state_dict(trunk.fc7.state_dict())
        return head


def head_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Returns the untrained head a saved spec describes: :class:`UnfrozenHead` or :class:`Head`."""
    spec = dict(spec)
    if spec.pop("kind", "head") == KIND:
        return UnfrozenHead(**spec)
    return Head(**spec)


def unfrozen_head_for(fs, num_classes: int, fca_width: int, dropout: float,
                      unfreeze: str) -> UnfrozenHead:  # fmt: skip
    """Returns an :class:`UnfrozenHead` from the trunk a feature set was extracted with.

    The trunk is ``info.trunk_source`` of the set's meta.json (a checkpoint file or MLflow URI,
    read by :func:`mlt.extract.load_trunk`); its weights digest must be the set's
    ``trunk_digest`` and the set must hold ``c5`` of the trunk's width.
    """
    from mlt.extract import load_trunk

    meta_file = fs.path / "meta.json"
    source = fs.meta.get("info", {}).get("trunk_source")
    if not source:
        raise InputError(meta_file, "info.trunk_source", source, "the trunk the set came from")
    if "c5" not in fs.layers:
        raise InputError(
            meta_file, "layers", sorted(fs.layers),
            f"a set with c5 (head.unfreeze={unfreeze} trains FC6 from cached C5 features)",
        )  # fmt: skip
    trunk = load_trunk(source)
    expected = fs.meta.get("inputs", {}).get("trunk_digest")
    if expected and trunk.digest != expected:
        raise InputError(
            source, "trunk weights", trunk.digest[:12],
            f"the weights the set was extracted with (digest {expected[:12]}…)",
        )  # fmt: skip
    head = UnfrozenHead.from_trunk(trunk.model, num_classes, fca_width, dropout, unfreeze)
    dim = int(fs.layers["c5"])
    if dim != head.c5_dim:
        raise InputError(meta_file, "layers.c5", dim, f"the trunk's C5 width {head.c5_dim}")
    return head


def build_head(fs, layer: str, hc, num_classes: int) -> nn.Module | None:
    """Returns the head ``hc.unfreeze`` asks for on ``fs``: an :class:`UnfrozenHead`, or None
    for ``"none"`` (``train_head`` then builds the plain FCa/FCb :class:`Head` on ``layer``)."""
    if hc.unfreeze == "none":
        return None
    if layer != "c5":
        raise InputError(
            None, "--layer", layer, f"c5 with head.unfreeze={hc.unfreeze} (FC6 learns from C5)"
        )
    torch.manual_seed(hc.seed)
    return unfrozen_head_for(fs, num_classes, hc.fca_width, hc.dropout, hc.unfreeze)
