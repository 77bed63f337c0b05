"""Shared fixtures: where the real data is, and small VOC-format fixtures made per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from datapaths import SHARED_DATA


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Returns ../shared/data (or $MLT_DATA); skips the test when it is absent."""
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def tinyvoc_root(shared_data: Path) -> Path:
    """Returns the TinyVOC devkit folder."""
    return _need(shared_data / "tinyvoc" / "TinyVOC")


@pytest.fixture(scope="session")
def tiny_imagenet_root(shared_data: Path) -> Path:
    """Returns the Tiny-ImageNet-200 folder."""
    return _need(shared_data / "tiny-imagenet-200")


@pytest.fixture(scope="session")
def voc2007_lists(shared_data: Path) -> Path:
    """Returns the genuine VOC 2007 ImageSets/Main folder (lists only, no images)."""
    return _need(shared_data / "voc2007-imagesets" / "Main")


@pytest.fixture(scope="session")
def ray_session():
    """Returns the one local Ray session shared by every test that needs Ray (stopped at the end)."""
    import ray

    from mlt.raysession import ensure_ray

    ensure_ray(num_cpus=4)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _restore_tracking_env():
    """Restores MLFLOW_TRACKING_URI after each test: mlflow.set_tracking_uri exports it, and a
    value left behind would pass for the user's choice in every later test."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
