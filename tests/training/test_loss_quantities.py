"""What the loop reports: train and validation losses are one quantity, validation errors one per weights.

Runs of one step on 4 structures whose val split is the same 4 structures, with a negligible lr
and no EMA, so the weights validated are (to ~1e-12) the weights the train loss was computed with.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from atomforge.objectives import DeNS, MixEntry
from atomforge.recipes.jmp import debug_cpu, only_tasks, with_data, with_objectives
from atomforge.training.launch import train
from atomforge.training.overrides import apply_overrides

from .conftest import publish, synthetic_structure


def records(output: Path, kind: str) -> list[dict]:
    lines = (output / "logs" / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def one_step(url: str, output: Path, *entries: MixEntry) -> tuple[dict, dict]:
    """(train record, val record) of a one-step run over the same-rows dataset."""
    config = only_tasks(with_data(debug_cpu(), {"ani1x": url}), ("ani1x",))
    if entries:
        config = with_objectives(config, *entries)
    train(apply_overrides(config, [
        "scaling.num_workers=0", f"checkpoint.output={output}", "max_steps=1", "log_every=1", "val_every=1",
        "data.max_atoms=1000", "data.max_structures=4", "data.val_max_structures=4", "optim.lr=1e-12",
        "optim.ema_decay=0"]))
    (step,) = records(output, "train")
    (val,) = records(output, "val")
    return step, val


@pytest.fixture(scope="module")
def same_rows(tmp_path_factory) -> str:
    rng = np.random.default_rng(7)
    structures = [synthetic_structure("ani1x", i, rng, periodic=False) for i in range(4)]
    return publish(tmp_path_factory.mktemp("data"), "ani1x", {"train": structures, "val": structures})


@pytest.fixture(scope="module")
def jmp_run(same_rows, tmp_path_factory) -> tuple[dict, dict]:
    return one_step(same_rows, tmp_path_factory.mktemp("jmp") / "run")


def test_train_loss_equals_validation_loss_on_the_same_structures(jmp_run):
    step, val = jmp_run
    assert step["loss"] == pytest.approx(val["val/ani1x/loss"], rel=1e-6)
    assert step["loss"] == pytest.approx(step["jmp/energy_loss"] + step["jmp/force_loss"], rel=1e-6)


def test_validation_errors_do_not_depend_on_the_mix(jmp_run, same_rows, tmp_path):
    """DeNS with a batch gate of 0.9 corrupts most batches; validation still reports the clean errors."""
    _, jmp_val = jmp_run
    _, dens_val = one_step(same_rows, tmp_path / "run", MixEntry(DeNS(probability=0.9)))
    for name in ("val/ani1x/energy_mae", "val/ani1x/force_mae"):
        assert dens_val[name] == pytest.approx(jmp_val[name], rel=1e-6), name
