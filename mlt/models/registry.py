"""Trunk variants by name, after timm's ``create_model``: factories register under a name.

A factory takes ``num_classes`` and keyword overrides and returns an ``nn.Module``::

    @register_model("alexnet-small")
    def alexnet_small(num_classes: int = 1000, **overrides) -> AlexNet: ...

    model = create_model("alexnet-small", num_classes=200)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from mlt.errors import InputError

ModelFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Returns a decorator that registers a model factory under ``name`` (names are unique)."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(
                f"model name {name!r} is already registered to {_REGISTRY[name].__qualname__}"
            )
        _REGISTRY[name] = factory
        return factory

    return decorate


def list_models() -> list[str]:
    """Returns the registered model names, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """Returns a new model of the registered variant ``name`` with ``num_classes`` outputs.

    ``kwargs`` go to the variant's factory (for the AlexNet family: fields of ``AlexNetSpec``
    to override, e.g. ``fc_width=6144``). An unknown name raises :class:`InputError` listing
    the known ones.
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        raise InputError(None, "model", name, f"one of {list_models()}", kind="unknown model")
    return factory(num_classes=num_classes, **kwargs)
