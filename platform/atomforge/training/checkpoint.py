"""Checkpoints of a run: model, EMA, optimizer, scheduler, AMP scaler, mixer positions, step, config.

One directory per checkpoint, named `checkpoint_{step:08d}`:
    state.pt      torch.save of the training state (every rank's mixer state, gathered by rank 0)
                  (tensors, containers and numbers only: read back with weights_only=True, no code runs)
    config.json   the resolved TrainConfig
    model.json    the model's own config (for fine-tuning / export without the recipe)
With Ray Train workers the directory is reported through `ray.train.report` and persisted by Ray
to `<storage_path>/<name>/`; Ray's local mode (num_workers=0) persists nothing, so there the
same directory is copied to the run's output here, and found again by `latest_checkpoint`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from atomforge.storage import filesystem

STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
_NAME = re.compile(r"checkpoint_(\d{8})$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:08d}"


def write_checkpoint(directory: Path, state: dict[str, Any], config_json: dict, model_json: dict | None) -> Path:
    """Write one checkpoint into a local `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config_json, indent=2))
    if model_json is not None:
        (directory / MODEL_FILE).write_text(json.dumps(model_json, indent=2))
    torch.save(state, directory / (STATE_FILE + ".tmp"))
    (directory / (STATE_FILE + ".tmp")).rename(directory / STATE_FILE)  # complete once state.pt exists
    return directory


def read_state(directory: str | Path) -> dict[str, Any]:
    """The training state of a local checkpoint directory."""
    # weights_only: tensors, containers and numbers only; a checkpoint never executes code when read.
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


def latest_checkpoint(output: str) -> str | None:
    """URL of the newest complete `checkpoint_*` directory under a run's output, or None."""
    fs, root = filesystem(output)
    if not fs.exists(root):
        return None
    fs.invalidate_cache(root)
    steps = []
    for entry in fs.ls(root, detail=False):
        match = _NAME.search(entry.rstrip("/"))
        if match and fs.exists(f"{entry.rstrip('/')}/{STATE_FILE}"):
            steps.append((int(match.group(1)), entry.rstrip("/")))
    if not steps:
        return None
    path = max(steps)[1]
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def download(url: str, local: Path) -> Path:
    """Copy a checkpoint directory (any fsspec URL) to a local folder."""
    fs, root = filesystem(url)
    local.mkdir(parents=True, exist_ok=True)
    for name in (STATE_FILE, CONFIG_FILE, MODEL_FILE):
        if fs.exists(f"{root}/{name}"):
            fs.get(f"{root}/{name}", str(local / name))
    return local


def upload(local: Path, output: str, name: str, num_to_keep: int) -> None:
    """Persist a local checkpoint directory as `<output>/<name>` and keep the newest `num_to_keep`."""
    fs, root = filesystem(output)
    fs.makedirs(root, exist_ok=True)
    target = f"{root}/{name}"
    fs.makedirs(target, exist_ok=True)
    for path in sorted(local.iterdir(), key=lambda p: p.name == STATE_FILE):  # state.pt last
        fs.put_file(str(path), f"{target}/{path.name}")
    fs.invalidate_cache(root)
    existing = sorted(e.rstrip("/") for e in fs.ls(root, detail=False) if _NAME.search(e.rstrip("/")))
    for old in existing[:-num_to_keep] if num_to_keep > 0 else []:
        fs.rm(old, recursive=True)
