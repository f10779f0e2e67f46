"""benchmarks/replicate.py --smoke as a user runs it: every arm runs with its budget; table, JSON and plot are written."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from replication.design import BUDGETS, CLAIMS, FINETUNINGS, PRETRAININGS  # noqa: E402
from replication.report import verdict  # noqa: E402


def test_verdict_needs_the_claimed_direction_beyond_one_std():
    assert verdict("better", {"mean": 0.2, "std": 0.1}) == "yes"
    assert verdict("better", {"mean": 0.05, "std": 0.1}) == "no (within 1 std)"
    assert verdict("better", {"mean": -0.2, "std": 0.1}) == "opposite"
    assert verdict("matches_or_better", {"mean": -0.05, "std": 0.1}) == "yes"
    assert verdict("matches_or_better", {"mean": -0.2, "std": 0.1}) == "no (worse beyond 1 std)"


@pytest.mark.slow
def test_smoke_run_every_arm_with_its_budget(tmp_path):
    report_file = tmp_path / "report.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "benchmarks/replicate.py", "--smoke", "--seeds", "0", "1",
                             "--output", str(tmp_path / "out"), "--json", str(report_file)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report, budget = json.loads(report_file.read_text()), BUDGETS["smoke"]
    runs = report["runs"]
    for arm in PRETRAININGS:
        for seed in ("0", "1"):
            assert runs["pretrain"][arm.name][seed]["optimizer_steps"] == budget.pretrain_steps[arm.family]
    for family, arms in FINETUNINGS.items():
        for dataset in report["runs"]["datasets"][family]:
            for arm in arms:
                for seed in ("0", "1"):
                    run = runs["finetune"][family][dataset][arm.name][seed]
                    assert run["epochs"] == budget.finetune_epochs[family]
                    steps = budget.finetune_epochs[family] * math.ceil(budget.num_train[family] / budget.batch_size)
                    assert run["optimizer_steps"] == steps
                    assert run["sizes"]["train"] == budget.num_train[family]
    claims = {(r["paper"], r["claim"]) for r in report["rows"]}
    assert claims == {(c.paper, c.claim) for c in CLAIMS}
    for row in report["rows"]:
        assert row["verdict"] in ("yes", "opposite", "no (within 1 std)", "no (worse beyond 1 std)", "not run")
        if row["verdict"] != "not run":
            assert len(row["arm_values"]) == len(row["baseline_values"]) == 2
    table = (tmp_path / "out" / "smoke" / "replication.md").read_text()
    assert table.count("\n| ") == len(report["rows"]) + 1  # header row + one per claim and set
    assert (tmp_path / "out" / "smoke" / "replication.png").stat().st_size > 10_000
