"""Optimiser, learning-rate schedule and EMA weights (JMP: AdamW, warmup then cosine, EMA 0.99; layer-wise LR when fine-tuning)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from atomforge.training.config import LayerLR, OptimConfig

_BLOCK = re.compile(r"^backbone\.[A-Za-z_]+\.(\d+)\.")


def lr_factor(step: int, total_steps: int, config: OptimConfig) -> float:
    """Multiplier of the base lr after `step` optimizer steps.

    Linear from `warmup_start_factor` to 1 over `warmup_steps`, then cosine from 1 to
    `min_lr_factor` at `total_steps` (JMP, OBJECTIVES.md §1), constant afterwards.
    """
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    if step < warmup:
        return config.warmup_start_factor + (1 - config.warmup_start_factor) * step / warmup
    span = max(total_steps - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return config.min_lr_factor + (1 - config.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def no_decay(model: nn.Module) -> set[int]:
    """ids of the parameters that get no weight decay: every parameter with < 2 dimensions (biases,
    norms, the SCD null token), every embedding table (atom types: 2-D, but a lookup, not a map) and a
    trainable per-element linear reference (energies in eV per atom: decay would pull them to 0 eV)."""
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    references = {id(p) for name, p in model.named_parameters() if name == "linear_reference"}
    return embeddings | references | {id(p) for p in model.parameters() if p.ndim < 2}


def layer_multiplier(name: str, num_blocks: int, layer_lr: LayerLR) -> float:
    """LR multiplier of one parameter: embedding (and other non-block backbone parts), block i, or heads.

    Block multipliers are read off `layer_lr.blocks` at the block's relative depth (linear
    interpolation), so a 2-block backbone gets the first and last of JMP's six values.
    """
    if not name.startswith("backbone."):
        return layer_lr.heads
    match = _BLOCK.match(name)
    if match is None:
        return layer_lr.embedding
    depth = int(match.group(1)) / max(num_blocks - 1, 1)
    table = np.asarray(layer_lr.blocks, dtype=np.float64)
    return float(np.interp(depth * (len(table) - 1), np.arange(len(table)), table))


def param_groups(model: nn.Module, config: OptimConfig) -> list[dict[str, Any]]:
    """AdamW groups keyed by (lr multiplier, weight decay), each with its parameters' names.

    `no_decay` parameters (< 2 dims, embedding tables) get no decay; multipliers come from
    `config.layer_lr` (1 everywhere without it). Parameters that do not require gradients are left out.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    skip = no_decay(model)
    blocks = [int(m.group(1)) for n, _ in named if (m := _BLOCK.match(n))]
    num_blocks = max(blocks) + 1 if blocks else 1
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in named:
        mult = 1.0 if config.layer_lr is None else layer_multiplier(name, num_blocks, config.layer_lr)
        decay = 0.0 if id(param) in skip else config.weight_decay
        group = groups.setdefault((mult, decay), {"params": [], "names": [], "lr": config.lr * mult,
                                                  "weight_decay": decay, "lr_multiplier": mult})
        group["params"].append(param)
        group["names"].append(name)
    # Sorted, decayed before not decayed: the order (and so the optimizer state layout) of the two groups
    # pretraining has always had, so checkpoints written before layer-wise groups resume.
    return [groups[key] for key in sorted(groups, key=lambda k: (k[0], k[1] == 0.0))]


def build_optimizer(model: nn.Module, config: OptimConfig, frozen: Sequence[nn.Parameter] = ()) -> torch.optim.Optimizer:
    """AdamW over `param_groups`. `frozen` parameters (e.g. SCD's atom embedding,
    `ObjectiveMix.frozen_parameters`) stop requiring gradients and are left out, so they get no update
    at all (AdamW would still move a zero-gradient parameter by weight decay or by momentum from
    earlier steps)."""
    for param in frozen:
        param.requires_grad_(False)
    groups = [{k: v for k, v in g.items() if k != "names"} for g in param_groups(model, config)]
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, config: OptimConfig):
    """Every group's lr times `lr_factor` (groups keep their layer-wise multipliers)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, config))


def build_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """An EMA copy of `model` (parameters and buffers), or None when decay is 0."""
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def clip_gradients(model: nn.Module, max_norm: float) -> float:
    """Clip the global gradient norm to `max_norm` (0 = only measure it); returns the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    limit = max_norm if max_norm > 0 else float("inf")
    return float(torch.nn.utils.clip_grad_norm_(params, limit))
