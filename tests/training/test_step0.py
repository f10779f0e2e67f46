"""Step-0 equality: fine-tuning that keeps a pretraining task's head and statistics starts exactly where the
pretrained model is (fairchem #1486: a fine-tuned model far worse than the pretrained one at step 0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from atomforge.recipes.finetune import continue_task
from atomforge.recipes.jmp import with_data
from atomforge.training.launch import train
from atomforge.training.overrides import apply_overrides

from .helpers import tiny_config

METRICS = ("val/ani1x/energy_mae", "val/ani1x/energy_per_atom_mae", "val/ani1x/force_mae", "val/ani1x/loss")


def validation(output: Path, step: int) -> dict[str, float]:
    records = [json.loads(line) for line in (output / "logs" / "metrics.jsonl").read_text().splitlines()]
    (record,) = [r for r in records if r["kind"] == "val" and r["step"] == step and "val/ani1x/loss" in r]
    return {name: record[name] for name in METRICS}


@pytest.fixture(scope="module")
def pretrained(tiny_shards, tmp_path_factory) -> tuple[Path, object]:
    """A 4-step pretraining run on the four tiny tasks, validated (EMA weights) and checkpointed at step 4."""
    output = tmp_path_factory.mktemp("step0") / "pretrain"
    config = tiny_config(tiny_shards, output, "max_steps=4", "val_every=4")
    train(config)
    return output, config


def continued(pretrained, tiny_shards, output: Path, *overrides: str):
    run, config = pretrained
    data = config.data  # the pretraining run's validation settings: the same validation batches
    ft = apply_overrides(with_data(continue_task("ani1x"), {"ani1x": tiny_shards["ani1x"]}), [
        f"init.source={run}", f"checkpoint.output={output}", "max_steps=1", f"data.max_atoms={data.max_atoms}",
        f"data.chunk_rows={data.chunk_rows}", f"data.val_max_structures={data.val_max_structures}", *overrides])
    train(ft)
    return validation(output, 0)


def test_kept_head_and_statistics_reproduce_the_pretrained_validation_at_step_0(pretrained, tiny_shards, tmp_path):
    expected = validation(pretrained[0], 4)
    assert continued(pretrained, tiny_shards, tmp_path / "ft") == expected  # exactly, every metric


def test_new_heads_or_refitted_statistics_do_not(pretrained, tiny_shards, tmp_path):
    """The same run with a fresh head (or statistics fitted again) starts elsewhere: the check above has teeth."""
    expected = validation(pretrained[0], 4)
    refitted = continued(pretrained, tiny_shards, tmp_path / "refit", "data.tasks.ani1x.statistics=train")
    assert refitted["val/ani1x/energy_mae"] != expected["val/ani1x/energy_mae"]
    fresh = continued(pretrained, tiny_shards, tmp_path / "fresh", "data.tasks.ani1x.statistics=train",
                      "init.keep_heads=False")
    assert abs(fresh["val/ani1x/energy_mae"] - expected["val/ani1x/energy_mae"]) > 1e-3
