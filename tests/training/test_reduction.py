"""The step loss is the global per-structure mean: 2 gloo ranks with unequal batches = one process on all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .two_ranks import SLICES, loss_and_gradients, structures

SCRIPT = Path(__file__).with_name("two_ranks.py")


@pytest.mark.slow
def test_two_gloo_ranks_with_unequal_batches_equal_one_process(tmp_path):
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), str(rank), "2", str(tmp_path / "store"), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    ranks = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    loss, count, grads, _ = loss_and_gradients(structures(), world=1)
    assert count == 8 and all(r["count"] == 8 for r in ranks)
    for r in ranks:
        assert r["loss"] == pytest.approx(loss, rel=1e-12)
        torch.testing.assert_close(r["grads"], grads, rtol=1e-10, atol=1e-12)
    # The old reduction, a mean of the two ranks' means, is a different number on unequal batches.
    assert [b - a for a, b in SLICES] == [3, 5]
    assert abs(0.5 * (ranks[0]["local_loss"] + ranks[1]["local_loss"]) - loss) > 1e-3 * loss
