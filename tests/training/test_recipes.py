"""Every objective mix of the recipes trains a few steps on the debug setup (local mode)."""

from __future__ import annotations

import math

import pytest
from atomforge.recipes.jmp import RECIPES, with_data
from atomforge.training.config import apply_overrides
from atomforge.training.launch import train

from .helpers import train_losses

MIXES = sorted(name for name in RECIPES if name.startswith("debug_"))


@pytest.mark.parametrize("name", MIXES)
def test_debug_mix_trains(name, tiny_shards, tmp_path):
    config = with_data(RECIPES[name](), tiny_shards)
    config = apply_overrides(config, ["scaling.num_workers=0", f"checkpoint.output={tmp_path}", "max_steps=2",
                                      "log_every=1", "val_every=0", "data.max_atoms=64"])
    train(config)
    losses = train_losses(tmp_path)
    assert sorted(losses) == [1, 2] and all(math.isfinite(v) for v in losses.values())
