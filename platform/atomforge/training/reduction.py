"""A step's loss: the per-structure mean over every micro-batch on every rank, and the gradient all-reduce.

Objectives return a micro-batch's loss as a mean over its structures. A step weights each
micro-batch by its structure count n_m, sums over micro-batches and ranks, and divides by the
global count N = Σ_ranks Σ_m n_m, so every structure of the step weighs the same whichever rank
and micro-batch it landed in (atom-budget batching makes the counts unequal; a mean of per-rank,
per-micro-batch means would over-weight structures in small batches). The gradients are summed
with one flattened all-reduce, the loss sums and counts with a second (float64) one; the reported
loss is the same global mean, so it is the quantity that was optimised.

A term that an objective averages over a subset of its batch (e.g. the energy term over structures
with an energy label) is averaged within its micro-batch first; with every structure labelled the
step's loss is exactly the mean over all of them.
"""

from __future__ import annotations

import torch
from torch import nn

from atomforge.training.distributed import Distributed


def micro_batch_weight(num_structures: int) -> float:
    """The factor a micro-batch's mean loss is multiplied by before backward (its structure count)."""
    return float(num_structures)


@torch.no_grad()
def reduce_step(model: nn.Module, loss_sum: float, num_structures: int, dist: Distributed) -> tuple[float, int]:
    """Sum gradients, loss sums and counts over the ranks of `dist`; gradients become the per-structure mean.

    Before: each parameter's .grad holds Σ_m n_m ∇L_m of this rank (see `micro_batch_weight`) and
    loss_sum = Σ_m n_m L_m over num_structures = Σ_m n_m. After: .grad = Σ_ranks Σ_m n_m ∇L_m / N on
    every rank. Returns (the global per-structure mean loss, N). Parameters without a gradient
    take part with zeros, so every rank's flattened vector has the same layout.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device if params else torch.device("cpu")
    totals = torch.tensor([loss_sum, float(num_structures)], dtype=torch.float64, device=device)  # NCCL: on the device
    if dist.world > 1:
        by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
        for p in params:  # one flat vector per dtype: a float64 reference does not promote the float32 rest
            by_dtype.setdefault(p.dtype, []).append(p)
        for group in by_dtype.values():
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group])
            dist.all_reduce(flat)
            offset = 0
            for p in group:
                p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
                offset += p.numel()
        dist.all_reduce(totals)
    count = int(totals[1])
    if count <= 0:
        raise ValueError(f"reduce_step: the step holds {count} structures over all ranks")
    for p in params:
        if p.grad is not None:
            p.grad.div_(count)
    return float(totals[0]) / count, count
