"""Trunks by name (``create_model``), their pieces for later stages, and weight import."""

from mlt.models import alexnet as _alexnet  # noqa: F401  (registers the AlexNet variants)
from mlt.models.alexnet import LAYERS, AlexNet, AlexNetSpec
from mlt.models.registry import create_model, list_models, register_model

__all__ = ["LAYERS", "AlexNet", "AlexNetSpec", "create_model", "list_models", "register_model"]
