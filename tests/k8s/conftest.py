"""Fixtures for the Kubernetes tests: rendered overlays and strict KubeRay CRD validators."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.name for p in (REPO / "k8s" / "overlays").iterdir() if p.is_dir())
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
K8S_VERSION = "1.32"  # Kubernetes schema version pod templates are checked against
APP_DIR = "/home/ray/atomforge"  # where the image puts jobs/ and pipelines/ (platform/docker/Dockerfile)
SECRET_NAMES = {"atomforge-s3", "atomforge-ray-token"}  # created by hand, never in the repo

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """Each overlay's `kubectl kustomize` output, as a list of documents."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not on PATH: cannot render the kustomize overlays")
    out = {}
    for name in OVERLAYS:
        result = subprocess.run([kubectl, "kustomize", str(REPO / "k8s" / "overlays" / name)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"overlay {name} failed to render:\n{result.stderr}"
        out[name] = [doc for doc in yaml.load_all(result.stdout, Loader=Loader) if doc]
    return out


def strict_schema(schema: dict) -> dict:
    """A copy of an openAPIV3 schema that rejects unknown fields, like `kubectl apply --validate=strict`.

    Every object that lists `properties` and neither sets `additionalProperties` nor carries
    `x-kubernetes-preserve-unknown-fields` gets `additionalProperties: false`.
    """
    schema = copy.deepcopy(schema)

    def visit(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def crd_schema(path: Path) -> dict:
    """The ray.io/v1 openAPIV3Schema of one KubeRay CRD file."""
    crd = yaml.load(path.read_text(), Loader=Loader)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="session")
def crd_schemas(shared_dir: Path) -> dict[str, dict]:
    """Kind -> the CRD's v1 schema as published (not strict), read from ../shared, never copied."""
    folder = shared_dir / "reference" / "kuberay-crds"
    if not folder.is_dir():
        pytest.skip(f"KubeRay CRDs not found at {folder}")
    return {kind: crd_schema(folder / name) for kind, name in CRD_FILES.items()}


def pod_templates(doc: dict) -> Iterator[tuple[str, dict]]:
    """(where, PodTemplateSpec) for every pod template in a RayCluster or RayJob."""
    spec = doc.get("spec", {})
    cluster_specs = []
    if doc["kind"] == "RayCluster":
        cluster_specs.append(("spec", spec))
    if doc["kind"] == "RayJob":
        if "rayClusterSpec" in spec:
            cluster_specs.append(("spec.rayClusterSpec", spec["rayClusterSpec"]))
        if "submitterPodTemplate" in spec:
            yield "spec.submitterPodTemplate", spec["submitterPodTemplate"]
    for where, cluster in cluster_specs:
        if "template" in cluster.get("headGroupSpec", {}):
            yield f"{where}.headGroupSpec.template", cluster["headGroupSpec"]["template"]
        for group in cluster.get("workerGroupSpecs", []):
            yield f"{where}.workerGroupSpecs[{group.get('groupName')}].template", group["template"]


def manifest_errors(doc: dict, schemas: dict[str, dict]) -> list[str]:
    """Every reason a rendered document would be refused: strict CRD schema, then Kubernetes pod schemas."""
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if doc.get("kind") in schemas:
        validator = jsonschema.Draft7Validator(strict_schema(schemas[doc["kind"]]))
        errors = [f"{name}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator.iter_errors(doc)]
        for where, template in pod_templates(doc):
            wrapped = {"apiVersion": "v1", "kind": "PodTemplate",
                       "metadata": {"name": "check"}, "template": template}
            errors += [f"{name}: {where}: {e}" for e in kubernetes_errors(wrapped)]
        return errors
    return [f"{name}: {e}" for e in kubernetes_errors(doc)]


def kubernetes_errors(doc: dict) -> list[str]:
    """Errors from kubernetes-validate's bundled schemas (strict: unknown fields are errors)."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.absolute_path))}: {error.message}"]
    return []


@pytest.fixture(scope="session")
def check_manifest(crd_schemas) -> Callable[[dict], list[str]]:
    return lambda doc: manifest_errors(doc, crd_schemas)
