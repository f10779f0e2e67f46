"""Every objective mix of the recipes trains a few steps on the debug setup (local mode)."""

from __future__ import annotations

import json
import math
import warnings

import pytest
from atomforge.recipes.jmp import RECIPES, with_data
from atomforge.training.launch import train
from atomforge.training.overrides import apply_overrides

from .helpers import train_losses

MIXES = sorted(name for name in RECIPES if name.startswith("debug_"))


@pytest.mark.parametrize("name", MIXES)
def test_debug_mix_trains(name, tiny_shards, tmp_path):
    config = with_data(RECIPES[name](), tiny_shards)
    config = apply_overrides(config, ["scaling.num_workers=0", f"checkpoint.output={tmp_path}", "max_steps=2",
                                      "log_every=1", "val_every=0", "data.max_atoms=64"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config)
    losses = train_losses(tmp_path)
    assert sorted(losses) == [1, 2] and all(math.isfinite(v) for v in losses.values())
    logged = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    notes = [r["message"] for r in logged if r["kind"] == "warning"]
    if name == "debug_derivative_ff":  # the tiny shards have no stress: the 1:500:500 recipe runs as 1:500:0
        assert any("'stress'" in n for n in notes) and any("'stress'" in str(w.message) for w in caught)
    else:
        assert notes == []


@pytest.mark.slow
def test_debug_gemnet_trains_its_20_steps(tiny_shards, tmp_path):
    """GemNet-OC (tiny) through the whole loop: 20 steps, validation, checkpoints, loss going down."""
    config = with_data(RECIPES["debug_gemnet"](), tiny_shards)
    assert type(config.model).__name__ == "GemNetOCConfig" and config.max_steps == 20
    train(apply_overrides(config, ["scaling.num_workers=0", f"checkpoint.output={tmp_path}", "log_every=1"]))
    losses = train_losses(tmp_path)
    assert sorted(losses) == list(range(1, 21)) and all(math.isfinite(v) for v in losses.values())
    first, last = [losses[s] for s in range(1, 6)], [losses[s] for s in range(16, 21)]
    assert sum(last) < sum(first)
    records = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "val" and r["step"] == 20 for r in records)
