"""Weights in torchvision's AlexNet layout (``features.N`` / ``classifier.N``), both ways.

torchvision's ``models.alexnet`` is ``features`` (conv, ReLU, [max-pool] for each of five
convolutions), ``avgpool``, ``classifier`` (dropout, linear, ReLU, dropout, linear, ReLU,
linear). Our ``c1..c5`` / ``fc6..fc8`` hold the same layers, so a state dict maps key by key.
Published ImageNet weights fit the ``alexnet-torchvision`` variant; the file is read locally
(``torch.load(..., weights_only=True)``, memory-mapped), nothing is downloaded.
"""

from __future__ import annotations

from os import PathLike

import torch

from mlt.checkpoint import read_checkpoint
from mlt.errors import InputError
from mlt.models.alexnet import AlexNet, AlexNetSpec


def torchvision_key_map(spec: AlexNetSpec) -> dict[str, str]:
    """Returns ``{our_key: torchvision_key}`` for every weight and bias of an AlexNet of ``spec``."""
    mapping: dict[str, str] = {}
    index = 0
    for i in range(5):
        for p in ("weight", "bias"):
            mapping[f"c{i + 1}.conv.{p}"] = f"features.{index}.{p}"
        index += 3 if i + 1 in spec.pool_after else 2
    for ours, theirs in (
        ("fc6.linear", "classifier.1"),
        ("fc7.linear", "classifier.4"),
        ("fc8", "classifier.6"),
    ):
        for p in ("weight", "bias"):
            mapping[f"{ours}.{p}"] = f"{theirs}.{p}"
    return mapping


def _read(path_or_state_dict: str | PathLike | dict) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(path_or_state_dict, dict):
        return path_or_state_dict, "<state dict>"
    return read_checkpoint(path_or_state_dict, mmap=True), str(path_or_state_dict)


def load_torchvision_state_dict(
    model: AlexNet,
    path_or_state_dict: str | PathLike | dict,
    strict: bool = True,
    drop_fc8: bool = False,
) -> AlexNet:
    """Returns ``model`` with weights copied from a torchvision-layout AlexNet state dict.

    ``drop_fc8`` leaves FC8 as initialised (a different number of classes). With ``strict``,
    keys missing from the file or left over in it are errors. A tensor whose shape does not
    fit (another architecture or geometry) raises :class:`InputError` naming the file, the
    key and both shapes.
    """
    state, source = _read(path_or_state_dict)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    full = torchvision_key_map(model.spec)
    mapping = {
        ours: theirs for ours, theirs in full.items() if not (drop_fc8 and ours.startswith("fc8."))
    }
    own = model.state_dict()
    missing = [theirs for theirs in mapping.values() if theirs not in state]
    unexpected = sorted(set(state) - set(full.values()))
    if strict and (missing or unexpected):
        raise InputError(
            source, "state dict keys", {"missing": missing[:6], "unexpected": unexpected[:6]},
            "torchvision's AlexNet keys (features.0/3/6/8/10, classifier.1/4/6)", kind="wrong checkpoint",
        )  # fmt: skip
    update = {}
    for ours, theirs in mapping.items():
        if theirs not in state:
            continue
        tensor = state[theirs]
        if not isinstance(tensor, torch.Tensor) or tensor.shape != own[ours].shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise InputError(
                source,
                theirs,
                got,
                f"shape {tuple(own[ours].shape)} for {ours} of this model",
                kind="shape mismatch",
            )
        update[ours] = tensor
    model.load_state_dict(update, strict=False)
    return model


def to_torchvision_state_dict(model: AlexNet) -> dict[str, torch.Tensor]:
    """Returns the model's weights under torchvision's AlexNet key names (tensors detached)."""
    own = model.state_dict()
    return {theirs: own[ours].detach() for ours, theirs in torchvision_key_map(model.spec).items()}
