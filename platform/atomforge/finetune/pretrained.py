"""The downstream model of a fine-tuning run: a pretrained (or fresh) backbone with heads for the new task.

The pretrained model comes from `atomforge.artifacts.reference.load_model` (any run directory,
checkpoint, export folder or hub id).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from atomforge.artifacts.pretrained import Pretrained
from atomforge.models import AtomisticModel
from atomforge.tasks import TaskSpec


def downstream_model(pretrained: Pretrained | None, backbone_config, spec: TaskSpec, keep_heads: bool,
                     seed: int, vector_heads: Sequence[str] = ()) -> AtomisticModel:
    """The fine-tuning model: the backbone (pretrained or fresh), new heads for `spec.name`.

    keep_heads: also keep the pretraining tasks' energy/force heads (trained weights); otherwise
    the model has the new task only. Pretraining-only heads (denoising, masking, SCD) are dropped;
    `vector_heads` the fine-tuning objectives use (DeNS / Noisy Nodes: "noise") start fresh.
    """
    torch.manual_seed(seed)
    tasks: dict[str, TaskSpec] = {}
    if pretrained is not None and keep_heads:
        tasks.update({t: s for t, s in pretrained.specs.items() if t != spec.name})
    tasks[spec.name] = spec
    config = backbone_config if pretrained is None else pretrained.model.backbone_config
    model = AtomisticModel(config, tasks, vector_heads=tuple(vector_heads))
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
