"""benchmarks/gpu_check.py as CI runs it (`--device cpu`, tiny sizes): every part reports, each case is ok
or says why it was skipped, the checks that ran hold, and the table and JSON are written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
PARTS = {"amp", "loader", "backbones", "neighbors", "export"}


def run_check(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "platform")}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_without_cuda_the_default_device_is_refused_with_the_cpu_hint():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    result = run_check("--minutes", "1", timeout=120)
    assert result.returncode == 2 and "run with --device cpu" in result.stderr


@pytest.mark.slow
def test_cpu_run_reports_every_part(tmp_path):
    report_file = tmp_path / "gpu.json"
    # 3 minutes bound the run on a loaded 2-core machine (imports dominate; a case that does not fit its
    # part's time box is a skip with its reason); the budgets are caps: on a quiet machine it ends in under one.
    result = run_check("--device", "cpu", "--minutes", "3", "--json", str(report_file), "--work", str(tmp_path / "w"),
                       timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    report = json.loads(report_file.read_text())
    assert set(report["parts"]) == PARTS and report["wall_s"] <= 3 * 60 + 30
    for name, part in report["parts"].items():
        assert part["status"] in ("ok", "skip") and not part["error"], (name, part["error"])
        assert part["rows"], f"part {name} reported no case"
        for row in part["rows"]:
            assert row["status"] == "ok" or (row["status"] == "skip" and row["reason"]), (name, row)
        assert part["status"] in result.stdout.lower()
    rows = {name: [r for r in part["rows"] if r["status"] == "ok"] for name, part in report["parts"].items()}
    amp = {r["case"]: r for r in report["parts"]["amp"]["rows"]}
    assert all("needs CUDA" in r["reason"] for case, r in amp.items() if case.endswith("/fp16"))
    assert all(r["rel_diff_step1"] <= r["tolerance"] for r in rows["amp"] if r["case"].endswith("/bf16"))
    assert all(r["identical"] for r in rows["neighbors"])
    assert all(r["weights_identical"] and r["max_energy_diff_ev"] == 0 for r in rows["export"])
    assert all(r.get("ms_per_step", 0) > 0 or "not supported" in (r["reason"] or "") for r in rows["backbones"])
    # tiny sizes compile one fixed backbone (not the fastest by a noisy timing): the same cases every run
    compiled = [r["case"] for r in rows["backbones"] if r["case"].endswith("/compile")]
    assert all(case.startswith("painn/") for case in compiled), compiled
