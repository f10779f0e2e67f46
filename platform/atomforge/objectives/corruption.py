"""Position corruption shared by the denoising objectives: seeded noise, atom selection, exact re-graphing.

A corruption returns the `ModelInputs` the model reads (positions moved, edges rebuilt for them),
and what the loss needs besides (the noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from atomforge.batch import regraph
from atomforge.models.inputs import ModelInputs
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


@dataclass(frozen=True, eq=False)
class Noised:
    """A batch with Gaussian noise on its positions: the inputs the model reads and the noise ε (N, 3) Å."""

    inputs: ModelInputs
    noise: torch.Tensor


def displaced(batch, displacement: torch.Tensor, ctx: ObjectiveContext) -> ModelInputs:
    """The batch's inputs with positions moved by displacement (N, 3) Å and the exact edges for
    them (`regraph`); gradients do not flow into the displacement (corruption is data, not a parameter)."""
    positions = batch.pos + displacement.detach().to(batch.pos.dtype)
    edge_index, shifts = regraph(batch, positions.detach(), ctx.skin, ctx.k_store)
    return ModelInputs.clean(batch).replace(positions=positions, edge_index=edge_index, shifts=shifts)


def gaussian_corruption(batch, ctx: ObjectiveContext, sigma_atom: torch.Tensor, mask: torch.Tensor) -> Noised:
    """ε ~ N(0, σ²) on atoms in `mask` (N,) bool, zero elsewhere; sigma_atom (N,) Å."""
    noise = normal((batch.pos.shape[0], 3), ctx, batch.pos) * sigma_atom.to(batch.pos).unsqueeze(-1)
    noise = noise * mask.unsqueeze(-1)
    return Noised(displaced(batch, noise, ctx), noise)
