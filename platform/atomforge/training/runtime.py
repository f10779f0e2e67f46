"""The glue between a TrainConfig and the model and objective packages: build them, give them context."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from atomforge.models.atomistic import AtomisticModel
from atomforge.objectives import ObjectiveContext, ObjectiveMix
from atomforge.objectives.mix import MixEntry
from atomforge.tasks import TaskSpec


def build_model(backbone_config, specs: Mapping[str, TaskSpec]) -> AtomisticModel:
    """Backbone + per-task heads, with the tasks' normalisers and linear references as buffers."""
    return AtomisticModel(backbone_config, tasks=dict(specs))


def build_objective(entries: Mapping[str, MixEntry], model=None) -> ObjectiveMix:
    """The recipe's objective mix (capabilities checked against `model` when given)."""
    return ObjectiveMix(list(entries.values()), model)


def objective_context(generator: torch.Generator, step: int, total_steps: int, specs: Mapping[str, TaskSpec],
                      training: bool, graph_params: Mapping[str, Mapping] | None = None) -> ObjectiveContext:
    """The context of one micro-batch. The storage skin and K_store are the most conservative over tasks."""
    graphs = list((graph_params or {}).values())
    skins = [float(g["skin"]) for g in graphs if g.get("skin") is not None]
    k_stores = [int(g["k_store"]) for g in graphs if g.get("k_store") is not None]
    return ObjectiveContext(
        generator=generator, tasks=dict(specs), task_names=tuple(specs), step=step, total_steps=total_steps,
        training=training, skin=min(skins) if skins else 0.0, k_store=min(k_stores) if k_stores else None,
    )
