"""jobs/jmp_pretrain.py as a user runs it: frozen CLI, clear errors, a real 2-worker gloo run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from atomforge.artifacts.checkpoint import read_state

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


@pytest.mark.slow
@pytest.mark.ray
def test_two_gloo_workers_as_a_user_runs_it(tiny_shards, tmp_path):
    output = tmp_path / "run"
    data = [arg for task, url in tiny_shards.items() for arg in ("--data", f"{task}={url}")]
    result = run_job("--recipe", "debug_cpu", *data, "--output", str(output), "--num-workers", "2",
                     "--set", "max_steps=4", "--set", "checkpoint.every_steps=4", "--set", "log_every=2",
                     "--set", "val_every=4", timeout=540)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = read_state(output / "checkpoint_00000004")
    assert state["step"] == 4 and state["world_size"] == 2 and len(state["mixers"]) == 2
    records = [json.loads(line) for line in (output / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4]
    assert {"val/oc20/energy_mae", "val/ani1x/force_mae", "val/oc20/loss"} <= set(records[-1])
    assert "done: step 4" in result.stdout


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
