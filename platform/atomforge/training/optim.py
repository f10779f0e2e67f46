"""Optimiser, learning-rate schedule and EMA weights (JMP: AdamW, warmup then cosine, EMA 0.99)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from atomforge.training.config import OptimConfig


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
    norms, the SCD null token) and every embedding table (atom types: 2-D, but a lookup, not a map)."""
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return embeddings | {id(p) for p in model.parameters() if p.ndim < 2}


def build_optimizer(model: nn.Module, config: OptimConfig, frozen: Sequence[nn.Parameter] = ()) -> torch.optim.Optimizer:
    """AdamW; `no_decay` parameters get no weight decay. `frozen` parameters (e.g. SCD's atom
    embedding, `ObjectiveMix.frozen_parameters`) stop requiring gradients and are left out, so they
    get no update at all (AdamW would still move a zero-gradient parameter by weight decay or by
    momentum from earlier steps)."""
    for param in frozen:
        param.requires_grad_(False)
    skip = no_decay(model)
    trained = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trained if id(p) not in skip]
    plain = [p for p in trained if id(p) in skip]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=tuple(config.betas))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, config: OptimConfig):
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
