"""Model references: what a string names (run, checkpoint, export, hub repo) and the model it restores.

A reference is, in this order of checks:
  * a hub id, `hf://org/name`, or a bare `org/name` that is not an existing local path: the hub
    repo's export, downloaded once into the hub client's cache (`atomforge.hub`);
  * an export folder (model.safetensors + config.json), local or any fsspec URL;
  * a checkpoint directory (state.pt, ...), local or any fsspec URL;
  * a run directory: its `best/` checkpoint (a fine-tuning run's selected weights) when it has one,
    else its newest complete `checkpoint_*` folder.
Exports are read with safetensors and json only; checkpoints with torch.load(weights_only=True), so
no reference can make atomforge run code. Both are upgraded from older format versions on reading
(`artifacts.checkpoint`, `artifacts.export`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atomforge import hub
from atomforge.artifacts import checkpoint, export
from atomforge.artifacts.pretrained import Pretrained, PretrainedModel, restore

EMA_PREFIX = "module."  # torch.optim.swa_utils.AveragedModel's state dict keys


@dataclass(frozen=True)
class Reference:
    """A resolved reference: kind ("hub" | "export" | "checkpoint") and where (repo id or URL)."""

    kind: str
    location: str


def is_hub_id(ref: str) -> bool:
    """`hf://org/name`, or a bare `org/name` that is not an existing local path."""
    return ref.startswith(hub.HUB_PREFIX) or (hub.looks_like_repo_id(ref) and not Path(ref).exists())


def resolve(ref: str) -> Reference:
    """What `ref` names (module doc); ValueError naming the reference when it is none of them."""
    ref = str(ref)
    if is_hub_id(ref):
        return Reference("hub", hub.repo_id(ref))
    if export.is_export(ref):
        return Reference("export", ref)
    if checkpoint.is_checkpoint(ref):
        return Reference("checkpoint", ref)
    best = f"{ref.rstrip('/')}/best"
    if checkpoint.is_checkpoint(best):  # a fine-tuning run: its selected weights
        return Reference("checkpoint", best)
    latest = checkpoint.latest_checkpoint(ref)
    if latest is not None:
        return Reference("checkpoint", latest)
    raise ValueError(f"{ref!r}: not a hub id, an export folder ({export.WEIGHTS_FILE} + {export.CONFIG_FILE}), "
                     f"a checkpoint ({checkpoint.STATE_FILE}) or a run directory holding checkpoint_* folders")


def load_model(ref: str, use_ema: bool = True) -> Pretrained:
    """Restore the model `ref` names (module doc), in eval mode on CPU.

    use_ema: a checkpoint's EMA weights when it has them (an export holds one copy, chosen when it
    was written).
    """
    found = resolve(ref)
    if found.kind == "hub":
        return export.read_export(hub.download(found.location, export.EXPORT_FILES), source=str(ref))
    with tempfile.TemporaryDirectory() as tmp:
        if found.kind == "export":
            local = Path(found.location) if Path(found.location).is_dir() else export.download(found.location, Path(tmp))
            return export.read_export(local, source=found.location)
        local = Path(found.location) if Path(found.location).is_dir() else checkpoint.download(found.location, Path(tmp))
        return load_checkpoint(local, use_ema, source=found.location)


def load_checkpoint(directory: Path, use_ema: bool = True, source: str = "") -> Pretrained:
    """The model of one local checkpoint directory (any supported format version)."""
    read = checkpoint.read_checkpoint(directory)
    if read.model is None:
        raise ValueError(f"{directory}: no {checkpoint.MODEL_FILE} (the model's config_dict); cannot rebuild the model")
    weights, ema = model_weights(read.state, use_ema)
    return restore(read.model, weights, read.tasks, meta=read.config, source=source or str(directory), ema=ema)


def model_weights(state: dict[str, Any], use_ema: bool) -> tuple[dict[str, torch.Tensor], bool]:
    """(state dict, whether it is the EMA copy): the EMA model's parameters when asked and saved."""
    ema = state.get("ema")
    if use_ema and ema is not None:
        return {k[len(EMA_PREFIX):]: v for k, v in ema.items() if k.startswith(EMA_PREFIX)}, True
    return dict(state["model"]), False


def load_pretrained(ref: str) -> PretrainedModel:
    """The model of any reference (export folder, hub id `org/name` / `hf://org/name`, checkpoint or
    run directory), in eval mode on CPU, EMA weights where there is a choice.

    `model.calculator(task=...)` gives an ASE calculator; `model.task_specs` the graph settings.
    """
    return load_model(str(ref)).model
