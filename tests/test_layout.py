"""The repository layout keeps the stdlib `platform` importable from the repo root (Ray's working dir)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_no_platform_package():
    assert not (REPO / "platform" / "__init__.py").exists()
    assert (REPO / "platform" / "atomforge" / "__init__.py").exists()


def test_stdlib_platform_wins_with_repo_root_first_on_path():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "platform")]))
    code = "import platform, uuid, torch, ray; print(platform.system()); import atomforge; print(uuid.uuid4().version)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Linux", "4"]


def test_top_level_layout():
    for name in ("pyproject.toml", "platform", "pipelines", "jobs", "k8s", "tests", "README.md", "Makefile", ".ci", "benchmarks"):
        assert (REPO / name).exists(), name
