"""Checkpoints: an interrupted and resumed run gives the same losses as an uninterrupted one."""

from __future__ import annotations

import pytest
from atomforge.artifacts.checkpoint import latest_checkpoint, read_state
from atomforge.training.launch import train

from .faults import FailOnce
from .helpers import tiny_config, train_losses


def test_resume_equals_uninterrupted(tiny_shards, tmp_path):
    straight = tmp_path / "straight"
    train(tiny_config(tiny_shards, straight))
    expected = train_losses(straight)
    assert sorted(expected) == list(range(1, 9))

    interrupted = tmp_path / "interrupted"
    fault = FailOnce(step=6, rank=0, output=str(interrupted))
    with pytest.raises(RuntimeError, match="injected failure at step 6"):
        train(tiny_config(tiny_shards, interrupted), hooks=[fault])
    assert latest_checkpoint(str(interrupted)).endswith("checkpoint_00000004")
    with pytest.raises(ValueError, match="--resume"):
        train(tiny_config(tiny_shards, interrupted), hooks=[fault])
    train(tiny_config(tiny_shards, interrupted), resume=True, hooks=[fault])

    resumed = train_losses(interrupted)
    for step in range(5, 9):  # steps after the checkpoint at 4, recomputed after the restart
        assert resumed[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-9), step

    state = read_state(latest_checkpoint(str(interrupted)))
    assert state["step"] == 8 and state["world_size"] == 1
    assert set(state) >= {"model", "ema", "optimizer", "scheduler", "scaler", "mixers"}
