"""Hydrogen masking (seed 004): hide one H per heavy-atom–H group, predict its direction from the parent.

Mechanics (the paper's are not public; these are ours):
1. Bonds: an H bonds to its nearest heavy atom (Z > 1) within `bond_length` (1.2 Å), found on the
   batch's graph with periodic images; an H with no heavy atom that near is never masked.
2. Groups: the H atoms bonded to one heavy atom. Per group one H is chosen uniformly (ctx.generator).
3. Masking: its type becomes MASK (Z = 0) and it is moved onto its parent's (image) position, so
   its position carries no information; edges shorter than 1e-3 Å from a masked atom (to its
   parent) are removed and the graph is rebuilt exactly (`regraph`) for the moved atom.
4. Target: d = x_H + shift·cell − x_parent; loss mean over masked atoms of 1 − cos(d̂_pred, d),
   from the "mask" vector head read at the masked atom. Labels are not needed; MD frames are fine.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F  # noqa: N812

from atomforge.models.backbone import MASK_Z, Capability
from atomforge.models.inputs import ModelInputs
from atomforge.objectives.corruption import displaced, uniform
from atomforge.objectives.objective import Objective, ObjectiveContext, ObjectiveResult


def hydrogen_bonds(batch, bond_length: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges (indices into batch.edge_index) H(src) -> nearest heavy atom(dst) within bond_length, and their
    vectors (B, 3) Å (H relative to the parent). One edge per bonded H."""
    src, dst = batch.edge_index
    cell = batch.cell[batch.batch[dst]]
    vec = batch.pos[src] + torch.einsum("ei,eij->ej", batch.shifts.to(batch.pos.dtype), cell) - batch.pos[dst]
    length = torch.linalg.norm(vec, dim=-1)
    candidate = (batch.z[src] == 1) & (batch.z[dst] > 1) & (length < bond_length)
    idx = torch.nonzero(candidate).squeeze(1)
    if idx.numel() == 0:
        return idx, vec[idx]
    nearest = torch.full((batch.z.shape[0],), float("inf"), dtype=length.dtype, device=length.device)
    nearest = nearest.scatter_reduce(0, src[idx], length[idx], "amin")
    idx = idx[length[idx] == nearest[src[idx]]]
    _, first = _first_per_key(src[idx])
    idx = idx[first]
    return idx, vec[idx]


def _first_per_key(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique keys and the position of the first occurrence of each."""
    unique, inverse = torch.unique(keys, return_inverse=True)
    order = torch.arange(keys.numel(), device=keys.device)
    first = torch.full((unique.numel(),), keys.numel(), device=keys.device).scatter_reduce(0, inverse, order, "amin")
    return unique, first


class HydrogenMasking(Objective):
    """See the module docstring for the mechanics. Loss 1 − cosine over masked H atoms."""

    name = "hmask"
    requires = frozenset({Capability.NODE_VECTORS, Capability.MASK_TOKEN})

    def __init__(self, bond_length: float = 1.2, head: str = "mask"):
        self.bond_length, self.head, self.heads = bond_length, head, (head,)

    def select(self, batch, ctx: ObjectiveContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(masked H atoms (M,), their parents (M,), displacement H − parent (M, 3) Å)."""
        bonds, vec = hydrogen_bonds(batch, self.bond_length)
        src, dst = batch.edge_index[0, bonds], batch.edge_index[1, bonds]
        keys = uniform((bonds.numel(),), ctx, batch.pos.device)
        parents, inverse = torch.unique(dst, return_inverse=True)
        best = torch.full((parents.numel(),), -1.0, dtype=keys.dtype, device=keys.device).scatter_reduce(0, inverse, keys, "amax")
        chosen = keys == best[inverse]
        return src[chosen], dst[chosen], vec[chosen]

    def run(self, model, batch, ctx: ObjectiveContext) -> ObjectiveResult:
        atoms, _, target = self.select(batch, ctx)
        if atoms.numel() == 0:
            return ObjectiveResult(batch.pos.new_zeros(()), {"num_masked": 0.0})
        out = model(masked_inputs(batch, ctx, atoms, target), energy=False, vector_heads=(self.head,))
        prediction = out.vectors[self.head][atoms]
        cosine = F.cosine_similarity(prediction, target.to(prediction.dtype), dim=-1, eps=1e-8)
        loss = (1 - cosine).mean()
        return ObjectiveResult(loss, {"cosine": float(cosine.mean().detach()), "num_masked": float(atoms.numel())})


def masked_inputs(batch, ctx: ObjectiveContext, atoms: torch.Tensor, target: torch.Tensor) -> ModelInputs:
    """The batch with H atoms (M,) typed MASK and moved onto their parents (target (M, 3) Å: H − parent),
    the graph rebuilt for the moved atoms and the edges between a masked atom and its parent removed."""
    moved = displaced(batch, torch.zeros_like(batch.pos).index_put((atoms,), -target), ctx)
    edge_index, shifts = _drop_coincident(moved, atoms)
    return moved.replace(z=batch.z.clone().index_fill_(0, atoms, MASK_Z), edge_index=edge_index, shifts=shifts)


def _drop_coincident(inputs: ModelInputs, atoms: torch.Tensor, tolerance: float = 1e-3):
    """(edge_index, shifts) without edges shorter than `tolerance` Å that touch one of `atoms`."""
    pos, (src, dst) = inputs.positions, inputs.edge_index
    cell = inputs.cell[inputs.graph[dst]].to(pos.dtype)
    length = torch.linalg.norm(pos[src] + torch.einsum("ei,eij->ej", inputs.shifts.to(pos.dtype), cell) - pos[dst], dim=-1)
    masked = torch.zeros(pos.shape[0], dtype=torch.bool, device=pos.device).index_fill_(0, atoms, True)
    keep = ~((masked[src] | masked[dst]) & (length < tolerance))
    return inputs.edge_index[:, keep], inputs.shifts[keep]
