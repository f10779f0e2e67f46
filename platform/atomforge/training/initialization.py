"""The model a run starts from: fresh weights, or a pretrained model's backbone with new or kept heads.

Fine-tuning and pretraining build their model here from the same inputs: the backbone config, the
data tasks' specs and the objectives' vector heads, plus (fine-tuning) a pretrained model
(`artifacts.reference.load_model`). Heads kept from the pretrained model keep their trained
weights; a data task named like a kept task continues with that head, so with its statistics kept
too the first validation of fine-tuning is the pretrained model's validation (step-0 equality).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from atomforge.artifacts.pretrained import Pretrained
from atomforge.models import AtomisticModel
from atomforge.tasks import TaskSpec

_HEAD = re.compile(r"(energy_heads|force_heads)\.([^.]+)\.")


def model_tasks(data_specs: Mapping[str, TaskSpec], pretrained: Pretrained | None, keep_heads: bool) -> dict[str, TaskSpec]:
    """Every task of the model, in task-id order: with kept heads the pretrained tasks first (their
    specs, unless a data task of the same name brings its own), then the data tasks not among them."""
    tasks: dict[str, TaskSpec] = {}
    if pretrained is not None and keep_heads:
        tasks.update({t: data_specs.get(t, s) for t, s in pretrained.specs.items()})
    tasks.update({t: s for t, s in data_specs.items() if t not in tasks})
    return tasks


def initial_model(backbone_config, data_specs: Mapping[str, TaskSpec], vector_heads: Sequence[str], seed: int,
                  pretrained: Pretrained | None = None, keep_heads: bool = False) -> AtomisticModel:
    """The model of a run, seeded by `seed` (identical on every rank).

    Without `pretrained`: fresh weights. With it: its backbone config and backbone weights (and
    graph-embedding head, null condition), its tasks' heads when `keep_heads`; new heads for the other
    data tasks; `vector_heads` (the objectives' denoising / masking heads) start fresh.
    """
    torch.manual_seed(seed)
    tasks = model_tasks(data_specs, pretrained, keep_heads)
    config = backbone_config if pretrained is None else pretrained.model.backbone_config
    model = AtomisticModel(config, tasks, vector_heads=tuple(vector_heads))
    if pretrained is None:
        return model
    kept = set(pretrained.model.tasks) if keep_heads else set()
    own = model.state_dict()
    own.update({k: v for k, v in pretrained.model.state_dict().items() if k in own and _transferable(k, kept)})
    model.load_state_dict(own)
    return model


def _transferable(key: str, kept: set[str]) -> bool:
    """Backbone weights always; kept tasks' heads; never new heads, vector heads or per-task buffers
    (those come from the specs: `AtomisticModel.set_task_statistics`)."""
    if key.startswith("backbone.") or key.startswith("embedding_head.") or key == "null_condition":
        return True
    match = _HEAD.match(key)
    return bool(match) and match.group(2) in kept



def scale_factors_unfitted(model: torch.nn.Module) -> bool:
    """True when the backbone has GemNet-OC scale factors and every one still holds its initial 1.0.

    A factor fitted once (in this run, or in the pretraining run whose weights the model starts from)
    holds another value; the buffers travel in every checkpoint and export, so resumed and fine-tuned
    runs keep them and never refit."""
    from atomforge.models.gemnet_oc.layers import ScaleFactor

    factors = [m.scale for m in model.modules() if isinstance(m, ScaleFactor)]
    return bool(factors) and all(float(scale) == 1.0 for scale in factors)


def fit_scales(model: torch.nn.Module, batch) -> dict[str, float]:
    """Fit the backbone's scale factors on `batch` (`models.gemnet_oc.scaling.fit_scale_factors`: one
    forward pass, in eval mode); name -> factor. The trainer fits on one rank and broadcasts."""
    from atomforge.models.gemnet_oc.scaling import fit_scale_factors

    training = model.training
    model.eval()
    try:
        return fit_scale_factors(model, batch)
    finally:
        model.train(training)
