"""Content-addressed feature-set ids: a short hash of everything that determines the features."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np

from featurestore.errors import FeatureStoreError

#: Inputs every id must be computed from; extra keys are allowed and hashed too.
REQUIRED_INPUTS: tuple[str, ...] = (
    "trunk_digest",  # digest of the trunk weights
    "layers",  # layer name(s) extracted, e.g. ["fc7"]
    "grid",  # window-grid parameters (scales, stride fraction, ...)
    "preprocessing",  # input size, mean/std, resize rule
    "mode",  # extraction mode (e.g. "windows", "full")
    "dataset_digest",  # digest of the dataset manifest (image ids + annotation digests)
    "extractor_version",  # code version of the extractor
)

ID_LENGTH = 16


def _normalise(value: Any, where: str) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()  # numpy scalars and arrays hash like their Python values
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FeatureStoreError(f"feature-set input {where}: {value!r} is not finite")
        # 12 significant digits: 0.1 + 0.2 and 0.3 hash alike; integral floats hash as ints.
        value = float(f"{value:.12g}")
        return int(value) if value.is_integer() else value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise FeatureStoreError(f"feature-set input {where}: key {k!r} is not a string")
            out[k] = _normalise(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_normalise(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return sorted(_normalise(v, f"{where}{{}}") for v in value)
    raise FeatureStoreError(
        f"feature-set input {where}: {type(value).__name__} {value!r} cannot be hashed; "
        f"expected JSON-like values (str, number, bool, None, list, mapping)"
    )


def canonical_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Returns ``inputs`` normalised for hashing (floats rounded, tuples as lists); checks required keys."""
    missing = [k for k in REQUIRED_INPUTS if k not in inputs]
    if missing:
        raise FeatureStoreError(
            f"feature-set inputs lack {', '.join(missing)}; expected all of {', '.join(REQUIRED_INPUTS)}"
        )
    return _normalise(inputs, "inputs")


def canonical_json(inputs: Mapping[str, Any]) -> str:
    """Returns the canonical JSON text of ``inputs`` (sorted keys, no spaces) that the id hashes."""
    return json.dumps(
        canonical_inputs(inputs), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )


def feature_set_id(inputs: Mapping[str, Any]) -> str:
    """Returns the 16-hex-digit id of a feature set: sha256 of the canonical JSON of its inputs.

    ``inputs`` must hold every key of :data:`REQUIRED_INPUTS`; extra keys are allowed.
    """
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()[:ID_LENGTH]


def layer_names(inputs: Mapping[str, Any]) -> list[str]:
    """Returns the layer names the inputs' ``layers`` entry lists (a name, a list, or a mapping)."""
    layers = inputs["layers"]
    if isinstance(layers, str):
        return [layers]
    return [str(x) for x in layers]
