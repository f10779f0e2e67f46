"""What the loop reports: train and validation losses are one quantity (the per-structure mean of the mix's loss)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from atomforge.recipes.jmp import debug_cpu, only_tasks, with_data
from atomforge.training.config import apply_overrides
from atomforge.training.launch import train

from .conftest import publish, synthetic_structure


def records(output: Path, kind: str) -> list[dict]:
    lines = (output / "logs" / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_train_loss_equals_validation_loss_on_the_same_structures(tmp_path):
    """One step on 4 structures whose val split is the same 4 structures, with a negligible lr:
    the logged train loss (before the update) and the val loss are the same number."""
    rng = np.random.default_rng(7)
    structures = [synthetic_structure("ani1x", i, rng, periodic=False) for i in range(4)]
    url = publish(tmp_path / "data", "ani1x", {"train": structures, "val": structures})
    config = only_tasks(with_data(debug_cpu(), {"ani1x": url}), ("ani1x",))
    output = tmp_path / "run"
    train(apply_overrides(config, [
        "scaling.num_workers=0", f"checkpoint.output={output}", "max_steps=1", "log_every=1", "val_every=1",
        "data.max_atoms=1000", "data.max_structures=4", "data.val_max_structures=4", "optim.lr=1e-12",
        "optim.ema_decay=0"]))
    (step,) = records(output, "train")
    (val,) = records(output, "val")
    assert step["loss"] == pytest.approx(val["val/ani1x/loss"], rel=1e-6)
    assert step["loss"] == pytest.approx(step["jmp/energy_loss"] + step["jmp/force_loss"], rel=1e-6)
