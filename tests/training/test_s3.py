"""Object storage: shards read from, and checkpoints written to, a real S3 endpoint (SeaweedFS)."""

from __future__ import annotations

from pathlib import Path

import pytest
from atomforge.artifacts.checkpoint import latest_checkpoint
from atomforge.artifacts.reference import load_model
from atomforge.storage import filesystem
from atomforge.training.launch import train

from .helpers import tiny_config


@pytest.mark.s3
@pytest.mark.slow
def test_train_from_and_to_s3(tiny_shards, s3_env, tmp_path):
    fs, _ = filesystem("s3://atomforge-train")
    urls = {}
    for task, local in tiny_shards.items():
        fs.put(local, f"atomforge-train/shards/{task}", recursive=True)
        urls[task] = f"s3://atomforge-train/shards/{task}"
    output = "s3://atomforge-train/runs/s3run"
    config = tiny_config(urls, Path("unused"), f"checkpoint.output={output}", "max_steps=4", "val_every=2")
    result = train(config)
    assert result.metrics["step"] == 4
    assert latest_checkpoint(output) == "s3://atomforge-train/runs/s3run/checkpoint_00000004"
    fs.invalidate_cache()
    assert fs.exists("atomforge-train/runs/s3run/config.json")
    assert fs.exists("atomforge-train/runs/s3run/logs/metrics.jsonl")
    restored = load_model(output)  # a run directory on S3 resolves to its newest checkpoint
    assert restored.source == "s3://atomforge-train/runs/s3run/checkpoint_00000004"
    assert restored.model.tasks == tuple(config.data.tasks) and restored.ema
