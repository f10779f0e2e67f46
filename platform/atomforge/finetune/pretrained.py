"""Starting points of fine-tuning: a pretraining checkpoint (or export / hub id) -> model + task specs.

A reference is resolved in this order:
  * a local export folder (`config.json` + `model.safetensors`) or a hub id (`org/name`,
    `hf://org/name`): `atomforge.hub.load_pretrained`, no pickle;
  * a checkpoint directory (`state.pt`, `model.json`, `config.json`; local or any fsspec URL),
  * a run directory holding `checkpoint_*` folders: its newest complete checkpoint.
Training checkpoints hold `torch.save` state written by this platform's own trainer
(`atomforge.training.checkpoint`) and are read with its reader: load checkpoints you trust only.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from atomforge.models import AtomisticModel
from atomforge.tasks import TaskSpec
from atomforge.training import checkpoint as ckpt

EMA_PREFIX = "module."
_TASK_FIELDS = {f.name for f in fields(TaskSpec)}


@dataclass
class Pretrained:
    """A restored model with what it was trained on.

    model: weights loaded (EMA when asked and present); specs: task name -> TaskSpec (cutoff, K,
    normalisers); forces: task name -> "direct" | "gradient"; meta: the source's recorded config
    (training or fine-tuning config, metrics) for model cards; source: where it came from.
    """

    model: AtomisticModel
    specs: dict[str, TaskSpec]
    forces: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    ema: bool = False


def is_hub_id(ref: str) -> bool:
    """`hf://org/name` or a bare `org/name` that is not an existing local path."""
    if ref.startswith("hf://"):
        return True
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", ref) is not None and not Path(ref).exists()


def load_source(ref: str, use_ema: bool = True) -> Pretrained:
    """Restore a model from a checkpoint, run directory, export folder or hub id (see module doc)."""
    from atomforge import hub

    if is_hub_id(ref) or (Path(ref).is_dir() and (Path(ref) / hub.WEIGHTS_FILE).exists()):
        return hub.load_export(ref)
    url = ckpt.latest_checkpoint(ref) or ref
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(url) if Path(url).is_dir() else ckpt.download(url, Path(tmp))
        if not (local / ckpt.STATE_FILE).exists():
            raise ValueError(f"--checkpoint {ref!r}: no {ckpt.STATE_FILE}, checkpoint_* folder or exported model there")
        return load_checkpoint_dir(local, use_ema, source=url)


def load_checkpoint_dir(directory: Path, use_ema: bool = True, source: str = "") -> Pretrained:
    """A model from one local checkpoint directory written by `training.checkpoint.write_checkpoint`."""
    model_file, config_file = directory / ckpt.MODEL_FILE, directory / ckpt.CONFIG_FILE
    if not model_file.exists():
        raise ValueError(f"{directory}: no {ckpt.MODEL_FILE} (the model's config_dict); cannot rebuild the model")
    model = AtomisticModel.from_config_dict(json.loads(model_file.read_text()))
    meta = json.loads(config_file.read_text()) if config_file.exists() else {}
    state = ckpt.read_state(directory)
    weights, ema = model_weights(state, use_ema)
    model.load_state_dict(weights)
    model.eval()
    specs = task_specs_from_config(meta, model)
    return Pretrained(model, specs, forces_modes(meta, model.tasks), meta, source or str(directory), ema)


def model_weights(state: Mapping[str, Any], use_ema: bool) -> tuple[dict[str, torch.Tensor], bool]:
    """(state dict, whether it is the EMA copy): the EMA model's parameters when asked and saved."""
    ema = state.get("ema")
    if use_ema and ema is not None:
        weights = {k[len(EMA_PREFIX):]: v for k, v in ema.items() if k.startswith(EMA_PREFIX)}
        return weights, True
    return dict(state["model"]), False


def task_specs_from_config(meta: Mapping[str, Any], model: AtomisticModel) -> dict[str, TaskSpec]:
    """TaskSpecs (cutoff, K, loss scales) from a recorded config, statistics from the model's buffers.

    Pretraining configs keep them under data.tasks.<name>.spec; fine-tuning metadata under `task_specs`.
    """
    recorded: dict[str, Mapping] = {}
    for name, entry in (meta.get("data", {}).get("tasks", {}) or {}).items():
        if isinstance(entry, Mapping) and isinstance(entry.get("spec"), Mapping):
            recorded[name] = entry["spec"]
    recorded.update({name: spec for name, spec in (meta.get("task_specs") or {}).items() if isinstance(spec, Mapping)})
    stats = model.config_dict()["task_statistics"]
    specs = {}
    for name in model.tasks:
        base = {k: v for k, v in recorded.get(name, {}).items() if k in _TASK_FIELDS and k != "name"}
        base.update({k: stats[name][k] for k in ("energy_mean", "energy_std", "force_std", "mean_reference")})
        base["linear_reference"] = {int(z): float(v) for z, v in stats[name]["linear_reference"].items()}
        if "cutoff" not in base:
            base["cutoff"] = float(model.backbone.cutoff)
        specs[name] = TaskSpec(name, **base)
    return specs


def forces_modes(meta: Mapping[str, Any], tasks) -> dict[str, str]:
    """Force parameterisation per task: the fine-tuning record's, else inferred from the pretraining mix.

    Pretraining configs record each objective's class and settings: a derivative force-field
    objective, or any objective trained with `forces="gradient"`, means gradient forces; anything
    else the per-task direct heads.
    """
    if isinstance(meta.get("forces"), Mapping):
        return {t: str(meta["forces"].get(t, "direct")) for t in tasks}
    entries = (meta.get("objectives") or {}).values()
    objectives = [e.get("objective") for e in entries if isinstance(e, Mapping) and isinstance(e.get("objective"), Mapping)]
    gradient = any(o.get("_type", "").endswith(".DerivativeForceField") or o.get("forces") == "gradient" for o in objectives)
    mode = "gradient" if gradient else "direct"
    return dict.fromkeys(tasks, mode)


def downstream_model(pretrained: Pretrained | None, backbone_config, spec: TaskSpec, keep_heads: bool,
                     seed: int) -> AtomisticModel:
    """The fine-tuning model: the backbone (pretrained or fresh), new heads for `spec.name`.

    keep_heads: also keep the pretraining tasks' energy/force heads (trained weights); otherwise
    the model has the new task only. Pretraining-only heads (denoising, masking, SCD) are dropped.
    """
    torch.manual_seed(seed)
    tasks: dict[str, TaskSpec] = {}
    if pretrained is not None and keep_heads:
        tasks.update({t: s for t, s in pretrained.specs.items() if t != spec.name})
    tasks[spec.name] = spec
    config = backbone_config if pretrained is None else pretrained.model.backbone_config
    model = AtomisticModel(config, tasks, vector_heads=())
    if pretrained is None:
        return model
    source = pretrained.model.state_dict()
    own = model.state_dict()
    copied = {k: v for k, v in source.items() if k in own and _transferable(k, tasks, spec.name)}
    own.update(copied)
    model.load_state_dict(own)
    return model


def _transferable(key: str, tasks: Mapping[str, TaskSpec], new_task: str) -> bool:
    """Backbone weights always; kept tasks' heads; never the new task's heads or the per-task buffers."""
    if key.startswith("backbone.") or key.startswith("embedding_head.") or key == "null_condition":
        return True
    match = re.match(r"(energy_heads|force_heads)\.([^.]+)\.", key)
    return bool(match) and match.group(2) in tasks and match.group(2) != new_task
