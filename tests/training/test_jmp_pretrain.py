"""jobs/jmp_pretrain.py as a user runs it: frozen CLI, clear errors, --data naming the task set (its real 2-worker
gloo run, elastic on a two-node cluster that loses a node, is test_elastic_cluster.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "jobs" / "jmp_pretrain.py"
ALLOWED_FLAGS = {"-h", "--help", "--recipe", "--set", "--data", "--output", "--resume", "--num-workers",
                 "--verify-data", "--debug"}


def run_job(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "platform")}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_flags_are_frozen():
    help_text = run_job("--help").stdout
    flags = {word.rstrip(",").split("=")[0] for word in help_text.split() if word.startswith("-")}
    assert flags == ALLOWED_FLAGS, f"CLI flags changed: {sorted(flags ^ ALLOWED_FLAGS)}; update docs/training.md"


def test_bad_override_is_a_clear_error():
    result = run_job("--recipe", "debug_cpu", "--set", "optim.lrr=1")
    assert result.returncode == 2
    assert "OptimConfig has no field 'lrr'" in result.stderr


def test_data_names_the_task_set():
    """--data for three of debug_cpu's four tasks trains those three (the fourth's default path is not read);
    without --data the recipe's tasks stay."""
    sys.path.insert(0, str(REPO / "jobs"))
    from jmp_pretrain import build_config, parse_args

    urls = {"oc20": "/data/oc20", "ani1x": "/data/ani1x", "transition1x": "/data/t1x"}
    config = build_config(parse_args(["--recipe", "debug_cpu", *[f"--data={t}={u}" for t, u in urls.items()]]))
    assert list(config.data.tasks) == ["oc20", "ani1x", "transition1x"]
    assert {t: d.url for t, d in config.data.tasks.items()} == urls
    assert list(build_config(parse_args(["--recipe", "debug_cpu"])).data.tasks) == ["oc20", "oc22", "ani1x", "transition1x"]
