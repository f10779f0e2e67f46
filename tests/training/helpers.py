"""Small run configs over the tiny shards for loop tests."""

from __future__ import annotations

import json
from pathlib import Path

from atomforge.recipes.jmp import debug_cpu, with_data
from atomforge.training.config import TrainConfig
from atomforge.training.overrides import apply_overrides


def tiny_config(shards: dict[str, str], output: Path, *overrides: str) -> TrainConfig:
    """debug_cpu on the tiny shards, in Ray Train local mode unless overridden."""
    config = with_data(debug_cpu(), shards)
    return apply_overrides(config, [
        "scaling.num_workers=0", f"checkpoint.output={output}", "max_steps=8", "checkpoint.every_steps=4",
        "log_every=1", "val_every=4", "data.max_atoms=96", "optim.warmup_steps=3", *overrides,
    ])


def train_losses(output: Path) -> dict[int, float]:
    """step -> training loss from the run's metrics.jsonl (the last record per step wins)."""
    losses = {}
    for line in (Path(output) / "logs" / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "train":
            losses[record["step"]] = record["loss"]
    return losses
