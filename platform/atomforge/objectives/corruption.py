"""Position corruption shared by the denoising objectives: seeded noise, atom selection, exact re-graphing."""

from __future__ import annotations

import torch

from atomforge.batch import regraph
from atomforge.objectives.objective import ObjectiveContext


def normal(shape, ctx: ObjectiveContext, like: torch.Tensor) -> torch.Tensor:
    """Standard normal draws from ctx.generator, on `like`'s device and dtype."""
    return torch.randn(shape, generator=ctx.generator, device=ctx.generator.device, dtype=torch.float64).to(like)


def uniform(shape, ctx: ObjectiveContext, device) -> torch.Tensor:
    """U[0, 1) draws from ctx.generator (float64), on `device`."""
    return torch.rand(shape, generator=ctx.generator, device=ctx.generator.device, dtype=torch.float64).to(device)


def free_atoms(batch) -> torch.Tensor:
    """(N,) bool: atoms allowed to move (not fixed)."""
    return ~batch.fixed.bool()


def displaced(batch, displacement: torch.Tensor, ctx: ObjectiveContext):
    """Positions moved by displacement (N, 3) Å and the exact edges for them (`regraph`).

    Returns (positions (N, 3), edge_index (2, E), shifts (E, 3)); gradients do not flow into the
    displacement (corruption is data, not a parameter).
    """
    positions = batch.pos + displacement.detach().to(batch.pos.dtype)
    edge_index, shifts = regraph(batch, positions.detach(), ctx.skin, ctx.k_store)
    return positions, edge_index, shifts


def gaussian_corruption(batch, ctx: ObjectiveContext, sigma_atom: torch.Tensor, mask: torch.Tensor):
    """ε ~ N(0, σ²) on atoms in `mask` (N,) bool, zero elsewhere; sigma_atom (N,) Å.

    Returns (noise (N, 3) Å, positions, edge_index, shifts).
    """
    noise = normal((batch.pos.shape[0], 3), ctx, batch.pos) * sigma_atom.to(batch.pos).unsqueeze(-1)
    noise = noise * mask.unsqueeze(-1)
    return (noise, *displaced(batch, noise, ctx))
