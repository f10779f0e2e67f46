"""The runtime image's Dockerfile agrees with pyproject.toml and with the manifests (read, not built)."""

from __future__ import annotations

import re

import pytest
import yaml

from .conftest import APP_DIR, REPO

DOCKERFILE = (REPO / "platform" / "docker" / "Dockerfile").read_text()


def pin(package: str) -> str:
    """The `==` version pyproject.toml pins for `package`."""
    match = re.search(rf'"{re.escape(package)}(\[[^\]]*\])?==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert match, f"{package} is not pinned with == in pyproject.toml"
    return match.group(2)


def arg_default(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert match, f"Dockerfile has no `ARG {name}=...`"
    return match.group(1)


def test_versions_match_pyproject_and_cluster():
    assert arg_default("RAY_VERSION") == pin("ray")
    assert arg_default("TORCH_VERSION") == pin("torch")
    cluster = yaml.safe_load((REPO / "k8s" / "base" / "raycluster.yaml").read_text())
    assert cluster["spec"]["rayVersion"] == pin("ray")


def test_variants_pick_ray_base_and_torch_index():
    assert arg_default("VARIANT") == "cpu"
    assert "FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-cpu AS base-cpu" in DOCKERFILE
    assert "FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-gpu AS base-cuda" in DOCKERFILE
    assert re.search(r"^FROM base-\$\{VARIANT\}", DOCKERFILE, re.MULTILINE)
    assert "download.pytorch.org/whl/cpu" in DOCKERFILE
    assert "download.pytorch.org/whl/${TORCH_CUDA}" in DOCKERFILE


def test_runs_as_non_root():
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.MULTILINE)
    assert users, "the image must set a USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and uid != "0", "numeric non-root uid, so Kubernetes runAsNonRoot can verify it"


@pytest.mark.parametrize("folder", ["jobs", "pipelines"])
def test_entry_scripts_land_where_manifests_run_them(folder):
    assert f"ATOMFORGE_HOME={APP_DIR}" in DOCKERFILE
    assert re.search(rf"^COPY .*\b{folder} \$\{{ATOMFORGE_HOME\}}/{folder}$", DOCKERFILE, re.MULTILINE)
    assert f"!{folder}/" in (REPO / ".dockerignore").read_text()


def test_platform_folder_is_never_a_package_in_the_image():
    # Only platform/atomforge is copied: a `platform` package would shadow the standard library.
    assert re.search(r"^COPY .*platform/atomforge /tmp/atomforge-src/platform/atomforge$", DOCKERFILE, re.MULTILINE)
    assert not re.search(r"^COPY .*\bplatform/? ", DOCKERFILE, re.MULTILINE)
