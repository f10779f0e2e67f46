"""GemNet-OC's interaction block (all four message types, edge and atom updates) and output block."""

from __future__ import annotations

import math

import torch
from torch import nn

from atomforge.models.gemnet_oc.interactions import (
    INV_SQRT2,
    PairInteraction,
    QuadrupletInteraction,
    TripletInteraction,
)
from atomforge.models.gemnet_oc.layers import Dense, ScaleFactor, residual_stack
from atomforge.models.hooks import AdaptiveLayerNorm


class EdgeEmbedding(nn.Module):
    """Dense([h_src, h_dst, x]) per edge: the initial edge embedding (x = raw rbf) and the atom-to-edge update."""

    def __init__(self, atom_dim: int, in_dim: int, out_dim: int):
        super().__init__()
        self.dense = Dense(2 * atom_dim + in_dim, out_dim)

    def forward(self, h, x, edges) -> torch.Tensor:
        return self.dense(torch.cat([h[edges.src], h[edges.dst], x], dim=-1))


class AtomUpdate(nn.Module):
    """Σ_{edges into a} m · rbf -> Dense(edge -> atom) -> `depth` residual pairs."""

    def __init__(self, atom_dim: int, edge_dim: int, rbf_dim: int, depth: int):
        super().__init__()
        self.dense_rbf = Dense(rbf_dim, edge_dim, activation=False)
        self.scale_sum = ScaleFactor()
        self.mlp = nn.Sequential(Dense(edge_dim, atom_dim), residual_stack(atom_dim, depth))

    def forward(self, m, rbf, edges, num_atoms: int) -> torch.Tensor:
        x = m * self.dense_rbf(rbf)
        summed = x.new_zeros(num_atoms, x.shape[1]).index_add_(0, edges.dst, x)
        return self.mlp(self.scale_sum(summed, m))


class OutputBlock(AtomUpdate):
    """Per-block readout: atom features x_E (N, atom) = AtomUpdate, + h, residuals; edge features x_F
    (E, edge) = residuals of m times a radial filter (the direct-force path)."""

    def __init__(self, atom_dim: int, edge_dim: int, rbf_dim: int, depth: int, depth_after_atom: int):
        super().__init__(atom_dim, edge_dim, rbf_dim, depth)
        self.after_atom = residual_stack(atom_dim, depth_after_atom)
        self.edge_mlp = residual_stack(edge_dim, depth)
        self.dense_rbf_f = Dense(rbf_dim, edge_dim, activation=False)
        self.scale_rbf_f = ScaleFactor()

    def forward(self, h, m, rbf, edges, num_atoms: int):
        x_e = self.after_atom((super().forward(m, rbf, edges, num_atoms) + h) * INV_SQRT2)
        x_f = self.edge_mlp(m)
        return x_e, self.scale_rbf_f(x_f * self.dense_rbf_f(rbf), x_f)


class InteractionBlock(nn.Module):
    """One GemNet-OC block: edges get triplet, quadruplet and atom-edge messages; atoms get edge-atom and
    atom-atom messages; then residual edge updates, the atom update and the atom-to-edge update.

    SCD conditioning (condition_dim > 0): the block reads an adaptive-LayerNorm-modulated copy of the
    atom embedding and its change to the atom embedding is scaled by the adaLN gate; unconditioned
    it is the published block.
    """

    def __init__(self, c):
        super().__init__()
        a, e = c.atom_dim, c.edge_dim
        self.condition = AdaptiveLayerNorm(a, c.condition_dim) if c.condition_dim > 0 else None
        self.dense_ca = Dense(e, e)
        self.triplet = TripletInteraction(e, e, c.triplet_in, c.triplet_out, c.rbf_dim, c.cbf_dim, symmetric=True)
        self.quadruplet = QuadrupletInteraction(e, c.quad_in, c.quad_out, c.rbf_dim, c.cbf_dim, c.sbf_dim)
        self.atom_edge = TripletInteraction(a, e, c.triplet_in, c.triplet_out, c.rbf_dim, c.cbf_dim, symmetric=True)
        self.edge_atom = TripletInteraction(e, a, c.triplet_in, c.triplet_out, c.rbf_dim, c.cbf_dim, symmetric=False)
        self.atom_atom = PairInteraction(a, c.atom_interaction_in, c.atom_interaction_out, c.rbf_dim)
        self.before_skip = residual_stack(e, c.num_before_skip)
        self.after_skip = residual_stack(e, c.num_after_skip)
        self.atom_layers = residual_stack(a, c.num_atom_emb_layers)
        self.atom_update = AtomUpdate(a, e, c.rbf_dim, c.num_atom)
        self.concat = EdgeEmbedding(a, e, e)
        self.concat_layers = residual_stack(e, c.num_concat)

    def forward(self, h, m, bases, g, condition, graph):
        """h (N, atom), m (E_main, edge) -> updated (h, m). bases: `BasisSet`; g: `GemNetGraphs`."""
        num_atoms = h.shape[0]
        gate = None
        if self.condition is not None:
            h, gate = self.condition(h, condition, graph)
        x = (self.dense_ca(m)
             + self.triplet(m, bases.e2e_rad, bases.e2e_cir, g.e2e, g.swap)
             + self.quadruplet(m, bases.quad_rad, bases.quad_cir, bases.quad_sph, g.quad_inner, g.quads, g.swap)
             + self.atom_edge(h, bases.a2e_rad, bases.a2e_cir, g.a2e, g.swap, expand=g.atom_edge.src)) * 0.5
        h_new = (h + self.edge_atom(m, bases.e2a_rad, bases.e2a_cir, g.e2a, reduce_to=g.atom_edge.dst,
                                    num_targets=num_atoms)
                 + self.atom_atom(h, bases.a2a_rad, g.atom)) * (1 / math.sqrt(3.0))
        m = self.after_skip((m + self.before_skip(x)) * INV_SQRT2)
        h_new = self.atom_layers(h_new)
        h_new = (h_new + self.atom_update(m, bases.atom_update, g.main, num_atoms)) * INV_SQRT2
        m = (m + self.concat_layers(self.concat(h_new, m, g.main))) * INV_SQRT2
        if gate is not None:
            h_new = h + gate * (h_new - h)
        return h_new, m
