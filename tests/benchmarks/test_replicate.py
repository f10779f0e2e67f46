"""benchmarks/replicate.py --smoke as a user runs it: every arm runs once with its budget; table, JSON and plot are written."""

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
from replication.report import ONE_SEED, verdict  # noqa: E402


def test_verdict_needs_the_claimed_direction_beyond_one_std():
    assert verdict("better", {"mean": 0.2, "std": 0.1}) == "yes"
    assert verdict("better", {"mean": 0.05, "std": 0.1}) == "no (within 1 std)"
    assert verdict("better", {"mean": -0.2, "std": 0.1}) == "opposite"
    assert verdict("matches_or_better", {"mean": -0.05, "std": 0.1}) == "yes"
    assert verdict("matches_or_better", {"mean": -0.2, "std": 0.1}) == "no (worse beyond 1 std)"


def test_every_claim_compares_arms_the_design_runs():
    """Each claim's arm and baseline is a fine-tuning arm of its family (a pretraining arm for claims read
    from the pretraining run), so no row of the table can be "not run" by design."""
    for claim in CLAIMS:
        arms = ({p.name for p in PRETRAININGS} if claim.pretraining_metric
                else {arm.name for arm in FINETUNINGS[claim.family]})
        assert {claim.arm, claim.baseline} <= arms, claim


@pytest.mark.slow
def test_a_results_directory_refuses_a_run_under_another_design(tmp_path):
    """Jobs are cached by path: results of one budget must never be read into a table of another."""
    import replicate

    replicate.check_design(tmp_path, "quick")
    replicate.check_design(tmp_path, "quick")  # the same design continues
    with pytest.raises(SystemExit, match="another design"):
        replicate.check_design(tmp_path, "default")


def test_smoke_run_every_arm_once_with_its_budget(tmp_path):
    """CI's run: one seed, one molecule, tiny budgets, every arm once through the real entry points (~30 s of CPU)."""
    report_file = tmp_path / "report.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "benchmarks/replicate.py", "--smoke", "--workers", "1",
                             "--output", str(tmp_path / "out"), "--json", str(report_file)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report, budget = json.loads(report_file.read_text()), BUDGETS["smoke"]
    runs = report["runs"]
    assert report["seeds"] == [0] and runs["datasets"]["molecules"] == ["ethanol"]
    for arm in PRETRAININGS:
        assert runs["pretrain"][arm.name]["0"]["optimizer_steps"] == budget.pretrain_steps[arm.family]
    for family, arms in FINETUNINGS.items():
        for dataset in report["runs"]["datasets"][family]:
            for arm in arms:
                run = runs["finetune"][family][dataset][arm.name]["0"]
                assert run["epochs"] == budget.finetune_epochs[family]
                steps = budget.finetune_epochs[family] * math.ceil(budget.num_train[family] / budget.batch_size)
                assert run["optimizer_steps"] == steps
                assert run["sizes"]["train"] == budget.num_train[family]
    claims = {(r["paper"], r["claim"]) for r in report["rows"]}
    assert claims == {(c.paper, c.claim) for c in CLAIMS}
    for row in report["rows"]:
        if row["pretraining_metric"] and row["verdict"] == "not run":  # the tiny OC20/OC22 corpora split no
            assert "validation force MAE" in row["reason"], row  # validation group; the small ones do
            continue
        assert row["verdict"] == ONE_SEED, row  # every arm ran; one seed gives no verdict
        assert len(row["arm_values"]) == len(row["baseline_values"]) == 1
        assert all(math.isfinite(v) for v in row["arm_values"] + row["baseline_values"])
    table = (tmp_path / "out" / "smoke" / "replication.md").read_text()
    assert table.count("\n| ") == len(report["rows"]) + 1  # header row + one per claim and set
    assert (tmp_path / "out" / "smoke" / "replication.png").stat().st_size > 10_000
