"""The checked-in cluster definitions: launcher YAML against Ray's own schema, KubeRay manifests,
and the Dockerfile's pins against pyproject.toml (no cloud, no Kubernetes, no Docker engine)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
LAUNCHER = ["aws.yaml", "gcp.yaml"]
KUBERAY = ["raycluster.yaml", "rayjob.yaml"]
_PIN = re.compile(
    r"""(?<![\w.-])([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([0-9][^\s"',;\\]*)"""
)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(requirements: list[str]) -> dict[str, str]:
    """Returns {normalised name: version} of the ``name==version`` requirements."""
    return {_norm(m[1]): m[2] for r in requirements for m in [_PIN.search(r)] if m}


PROJECT_PINS = _pins(PYPROJECT["project"]["dependencies"])


# -- Ray cluster launcher -------------------------------------------------------------------------


def _launcher(name: str) -> dict:
    return yaml.safe_load((REPO / "cluster" / name).read_text())


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_config_matches_rays_schema(name: str) -> None:
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = _launcher(name)
    jsonschema.validate(config, schema)
    from ray.autoscaler._private.util import validate_config  # Ray's own check on top of it

    validate_config(config)


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_config_has_a_head_and_a_gpu_worker_group_on_the_project_image(name: str) -> None:
    config = _launcher(name)
    assert config["provider"]["type"] == name.removesuffix(".yaml")
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    gpu = [v for v in workers.values() if v["resources"].get("GPU", 0) >= 1]
    assert gpu and all(v["max_workers"] >= 1 for v in gpu)
    assert all("--gpus all" in v["docker"]["worker_run_options"] for v in gpu)
    docker = config["docker"]
    assert docker["image"].endswith(f"/mlt:{VERSION}")
    assert "--entrypoint ''" in docker["run_options"]  # the image's entrypoint is `mlt`
    assert any(o.endswith(":/shared") for o in docker["run_options"])  # shared run folder/store
    # token auth: the same token on every node, RAY_AUTH_MODE=token on head and workers
    assert "~/.ray/auth_token" in config["file_mounts"]
    head_start = " ".join(config["head_start_ray_commands"])
    worker_start = " ".join(config["worker_start_ray_commands"])
    for cmd in (head_start, worker_start):
        assert "RAY_AUTH_MODE=token" in cmd
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start


# -- KubeRay ------------------------------------------------------------------------------------


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((REPO / "cluster" / "kuberay" / name).read_text()) if d]


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_manifest_kinds_and_versions(name: str) -> None:
    docs = _docs(name)
    kinds = {d["kind"]: d for d in docs}
    ray_kind = "RayCluster" if name == "raycluster.yaml" else "RayJob"
    assert set(kinds) == {"ConfigMap", "PersistentVolumeClaim", ray_kind}
    ray_doc = kinds[ray_kind]
    assert ray_doc["apiVersion"] == "ray.io/v1"
    spec = _cluster_spec(ray_doc)
    assert spec["rayVersion"] == PROJECT_PINS["ray"]
    assert spec["authOptions"]["mode"] == "token"
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
    assert kinds["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    if ray_kind == "RayJob":
        entry = ray_doc["spec"]["entrypoint"].split()
        assert entry[:2] == ["python", "-m"] and entry[2].startswith("jobs.")
        assert (REPO / "jobs" / f"{entry[2].split('.', 1)[1]}.py").is_file()
        assert ray_doc["spec"]["shutdownAfterJobFinishes"] is True
        yaml.safe_load(ray_doc["spec"]["runtimeEnvYAML"])


@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_pods_use_the_image_a_shared_volume_and_the_mlflow_uri(name: str) -> None:
    docs = _docs(name)
    by_kind = {d["kind"]: d for d in docs}
    configmap = by_kind["ConfigMap"]
    pvc = by_kind["PersistentVolumeClaim"]["metadata"]["name"]
    spec = _cluster_spec(by_kind.get("RayCluster") or by_kind["RayJob"])
    groups = [("head", spec["headGroupSpec"])] + [("worker", g) for g in spec["workerGroupSpecs"]]
    for role, group in groups:
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        assert container["image"].endswith(f"/mlt:{VERSION}")
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts["/shared"]]["persistentVolumeClaim"]["claimName"] == pvc
        env = {e["name"]: e for e in container["env"]}
        ref = env["MLFLOW_TRACKING_URI"]["valueFrom"]
        assert "value" not in env["MLFLOW_TRACKING_URI"]
        if "configMapKeyRef" in ref:
            assert ref["configMapKeyRef"]["name"] == configmap["metadata"]["name"]
            assert ref["configMapKeyRef"]["key"] in configmap["data"]
        else:
            assert "secretKeyRef" in ref
        assert pod["securityContext"]["runAsUser"] != 0
        if role == "worker":
            assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1


def test_kuberay_files_share_the_same_configmap_and_volume_claim() -> None:
    a, b = ({d["kind"]: d for d in _docs(n)} for n in KUBERAY)
    for kind in ("ConfigMap", "PersistentVolumeClaim"):
        assert a[kind] == b[kind]


# -- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """Returns (INSTRUCTION, arguments) pairs with continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions((REPO / "Dockerfile").read_text())


def test_dockerfile_parses_into_known_instructions(dockerfile) -> None:
    known = {"FROM", "ARG", "ENV", "RUN", "USER", "WORKDIR", "COPY", "ENTRYPOINT", "CMD", "LABEL"}
    assert {i for i, _ in dockerfile} <= known
    assert dockerfile[0][0] in ("ARG", "FROM")
    for inst, args in dockerfile:
        if inst in ("ENTRYPOINT", "CMD"):
            assert isinstance(json.loads(args), list)  # exec form


def test_dockerfile_base_python_user_entrypoint(dockerfile) -> None:
    args = dict(a.split("=", 1) for i, a in dockerfile if i == "ARG" and "=" in a)
    (base,) = [a for i, a in dockerfile if i == "FROM"]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], base)
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d\d\.04", base), base
    runs = " ".join(a for i, a in dockerfile if i == "RUN")
    assert "python3.11" in runs and "python3.11 -m venv" in runs
    users = [(n, a) for n, (i, a) in enumerate(dockerfile) if i == "USER"]
    assert users and users[-1][1] not in ("root", "0")
    entry_at = next(n for n, (i, _) in enumerate(dockerfile) if i == "ENTRYPOINT")
    assert users[-1][0] < entry_at
    entry = json.loads(dict(dockerfile)["ENTRYPOINT"])
    assert entry[-1] == "mlt"


def test_dockerfile_pins_agree_with_pyproject(dockerfile) -> None:
    runs = [a for i, a in dockerfile if i == "RUN"]
    pins = _pins([m.group(0) for r in runs for m in _PIN.finditer(r)])
    for required in ("torch", "ray", "mlflow", "nvidia-dali-cuda130"):
        assert required in pins, f"the Dockerfile does not pin {required}"
    for name, version in pins.items():
        assert PROJECT_PINS.get(name) == version, (
            f"Dockerfile pins {name}=={version}, pyproject.toml has {PROJECT_PINS.get(name)}"
        )
    # torch: the CUDA build of the pinned version, from PyTorch's CUDA 13 index, before the rest
    args = dict(a.split("=", 1) for i, a in dockerfile if i == "ARG" and "=" in a)
    torch_run = next(r for r in runs if "torch==" in r)
    index = re.search(r"--index-url\s+(\S+)", torch_run)[1]
    index = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], index)
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu13\d", index)
    assert runs.index(torch_run) < next(n for n, r in enumerate(runs) if "ray[" in r)
    assert "-c constraints.txt" in " ".join(runs)


def test_dockerfile_copies_what_exists_and_dockerignore_keeps_local_state_out(dockerfile) -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "runs"} <= ignored
    for inst, args in dockerfile:
        if inst != "COPY":
            continue
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        for src in sources:
            assert (REPO / src).exists(), src
            assert src not in ignored, src
