"""The bad-input and security catalogue of docs/RELIABILITY.md: the items no other test covers.

Each bad input is a clear :class:`~mlt.errors.InputError` naming the file, the field and the
value (or a documented, counted skip). The security items are checked on the behaviour where
that is cheap, and on the source by AST (as tests/test_layout.py does) where it is not.
"""

from __future__ import annotations

import ast
import io
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from trunkfixture import tiny_trunk
from vocfixture import small_voc

from mlt.decode import make_window_cropper
from mlt.errors import InputError, SkipLog

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["mlt", "featurestore", "jobs", "bench"]


def _sources() -> list[Path]:
    return [p for d in SOURCES for p in sorted((REPO / d).rglob("*.py"))]


def _calls(path: Path) -> list[ast.Call]:
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)]


def _dotted(node: ast.AST) -> str:
    """Returns ``a.b.c`` for a Name/Attribute chain ('' for anything else)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


# -- bad inputs --------------------------------------------------------------------------------


def test_split_id_without_annotation_names_the_file(tmp_path: Path) -> None:
    from mlt.data.voc import VocDataset

    root = small_voc(tmp_path / "voc")
    xml = root / "Annotations" / "000002.xml"
    xml.unlink()
    with pytest.raises(InputError) as err:
        VocDataset(root).load("train")
    assert err.value.kind == "missing annotation" and str(xml) in str(err.value)
    skipping = VocDataset(root, skip_bad=SkipLog(enabled=True))
    assert [a.image_id for a in skipping.load("train")] == ["000001", "000003"]
    assert skipping.skip_bad.by_kind() == {"missing annotation": 1}


def _cmyk_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 60, 3), 120, np.uint8)).convert("CMYK").save(buf, "JPEG")
    return buf.getvalue()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 60, 3), 50, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _gray_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 60), 90, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (None, "missing image"),
        (lambda good: b"", "empty image"),
        (lambda good: good[: len(good) // 2], "truncated image"),
        (lambda good: b"<html>not a jpeg</html>", "not an image"),
        (lambda good: _cmyk_jpeg(), None),
        (lambda good: _gray_jpeg(), None),
        (lambda good: _png(), None),
    ],
    ids=["missing", "zero-size", "truncated", "non-image", "cmyk", "grayscale", "png-in-jpg"],
)
def test_devkit_images_through_the_extraction_cropper(tmp_path: Path, make, kind) -> None:
    """The cropper extraction uses: a bad image names its file; odd but valid ones decode."""
    root = small_voc(tmp_path / "voc")
    path = root / "JPEGImages" / "000001.jpg"
    good = path.read_bytes()
    if make is None:
        path.unlink()
    else:
        path.write_bytes(make(good))
    cropper = make_window_cropper("reference", out_size=8)
    boxes = np.array([[0, 0, 20, 20], [5, 5, 30, 25]], np.float32)
    if kind is None:
        assert cropper.crop(path, boxes).shape == (2, 3, 8, 8)
        return
    with pytest.raises(InputError) as err:
        cropper.crop(path, boxes)
    assert err.value.kind == kind and err.value.file == str(path) and str(path) in str(err.value)


def test_trunk_checkpoint_of_another_architecture_names_file_and_key(tmp_path: Path) -> None:
    from mlt.extract import load_trunk

    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 4))
    path = tmp_path / "resnet_like.pth"
    torch.save({"model": other.state_dict(), "model_name": "alexnet-small", "classes": ["a"]}, path)
    with pytest.raises(InputError) as err:
        load_trunk(str(path))
    assert "resnet_like.pth" in str(err.value) and "missing" in str(err.value)
    no_name = tmp_path / "bare.pth"
    torch.save({"weights": other.state_dict()}, no_name)
    with pytest.raises(InputError) as err:
        load_trunk(str(no_name))
    assert err.value.field == "model_name" and "bare.pth" in str(err.value)


def test_feature_set_of_another_trunk_is_refused_by_an_unfrozen_head(tmp_path: Path) -> None:
    from mlt.extract import load_trunk
    from mlt.heads.unfrozen import unfrozen_head_for

    extracted_with = load_trunk(str(tiny_trunk(tmp_path / "a.pth", seed=0)))
    given = tiny_trunk(tmp_path / "b.pth", seed=1)  # same architecture, other weights
    c5 = int(extracted_with.model.feature_dims["c5"])
    fs = SimpleNamespace(
        path=tmp_path / "set",
        meta={"info": {"trunk_source": str(given)},
              "inputs": {"trunk_digest": extracted_with.digest}},
        layers={"c5": c5, "fc7": 64},
    )  # fmt: skip
    with pytest.raises(InputError) as err:
        unfrozen_head_for(fs, 3, 16, 0.5, "fc6")
    assert err.value.field == "trunk weights" and str(given) in str(err.value)
    assert extracted_with.digest[:12] in str(err.value)
    fs.meta["info"]["trunk_source"] = str(tmp_path / "a.pth")
    fs.layers["c5"] = c5 + 1  # a set of another trunk's width
    with pytest.raises(InputError) as err:
        unfrozen_head_for(fs, 3, 16, 0.5, "fc6")
    assert err.value.field == "layers.c5" and "meta.json" in str(err.value)


# -- security ----------------------------------------------------------------------------------


def test_every_torch_load_is_weights_only() -> None:
    found = []
    for path in _sources():
        for call in _calls(path):
            if _dotted(call.func) == "torch.load":
                kw = {k.arg: k.value for k in call.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True  # fmt: skip
                assert ok, f"{path.relative_to(REPO)}:{call.lineno}: torch.load without weights_only=True"  # fmt: skip
                found.append(path)
    assert found  # the check saw the loads it guards


def test_xml_is_parsed_only_through_defusedxml() -> None:
    unsafe = ("xml.etree", "xml.dom", "xml.sax", "xml.parsers", "lxml", "xmltodict")
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            bad = [n for n in names if n == "xml" or n.startswith(unsafe)]
            assert not bad, f"{path.relative_to(REPO)}:{node.lineno}: {bad} (use defusedxml)"
    voc = (REPO / "mlt/data/voc.py").read_text()
    assert "from defusedxml import ElementTree" in voc and "SafeET.parse(" in voc


def test_pickles_are_loaded_only_from_the_configured_registry() -> None:
    """No pickle/cloudpickle/joblib load anywhere; mlflow model loads only in load_trunk, whose
    URIs are runs:/ or models:/ of the configured tracking server (see its body)."""
    allowed = {("mlt/extract.py", "load_trunk")}
    for path in _sources():
        rel = str(path.relative_to(REPO))
        tree = ast.parse(path.read_text())
        inside_allowed = {
            id(call)
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef) and (rel, fn.name) in allowed
            for call in ast.walk(fn)
        }
        for call in [n for n in ast.walk(tree) if isinstance(n, ast.Call)]:
            name = _dotted(call.func)
            where = f"{rel}:{call.lineno}: {name}"
            if name.split(".")[0] in ("pickle", "cloudpickle", "joblib", "dill"):
                assert not name.endswith(("load", "loads")), where
            if name.startswith("mlflow.") and name.endswith("load_model"):
                assert id(call) in inside_allowed, where


def test_a_pickled_trunk_file_is_refused(tmp_path: Path) -> None:
    from mlt.extract import load_trunk

    path = tmp_path / "pickled.pth"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole pickled module, not a state dict
    with pytest.raises(InputError, match="pickled.pth.*unsafe checkpoint"):
        load_trunk(str(path))


def test_local_ray_dashboard_binds_to_the_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlt.raysession import ensure_ray

    seen = {}
    fake = types.ModuleType("ray")
    fake.is_initialized = lambda: False
    fake.init = lambda **kw: seen.update(kw)
    fake.cluster_resources = lambda: {"CPU": 1.0}
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLT_RAY_DASHBOARD", raising=False)
    ensure_ray(1)
    assert seen["dashboard_host"] == "127.0.0.1" and seen["include_dashboard"] is True
    # the workers are told this cluster's own State API (tests/test_raysession.py: why)
    api = seen["runtime_env"]["env_vars"]["RAY_API_SERVER_ADDRESS"]
    assert api == f"http://127.0.0.1:{seen['dashboard_port']}"
    seen.clear()
    monkeypatch.setenv("MLT_RAY_DASHBOARD", "0")
    ensure_ray(1)
    assert seen["dashboard_host"] == "127.0.0.1" and seen["include_dashboard"] is False
    assert "runtime_env" not in seen


def test_mlflow_server_binds_to_the_loopback_by_default() -> None:
    import inspect

    from mlt.cli.registry import ui
    from mlt.registry.server import start_server

    host = next(p for p in ui.params if p.name == "host")
    assert host.default == "127.0.0.1"
    assert inspect.signature(start_server).parameters["host"].default == "127.0.0.1"


def test_no_secrets_in_logged_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlt import tracking

    logged = {}
    monkeypatch.setattr(tracking.mlflow, "set_tags", logged.update)
    tracking.set_tags(
        {"mlt.trunk.source": "https://alice:hunter2@mlflow.example/runs/1",
         "mlt.api_token": "s3cret", "mlt.stage": "extract", "mlt.none": None}
    )  # fmt: skip
    assert logged == {
        "mlt.trunk.source": "https://***@mlflow.example/runs/1",
        "mlt.api_token": "***",
        "mlt.stage": "extract",
    }
    assert "hunter2" not in str(tracking.flatten({"tracking": {"uri": "http://a:hunter2@h/"}}))
