"""Corpus-test fixtures: the demo corpora (tiny), generated once per session by the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """`jobs/make_demo_corpora.py --size tiny` output, run as a subprocess (as a user would)."""
    out = tmp_path_factory.mktemp("demo") / "corpora"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(REPO / "jobs" / "make_demo_corpora.py"), "--output", str(out),
                    "--size", "tiny", "--seed", "3"], check=True, env=env, capture_output=True, timeout=300)
    return out
