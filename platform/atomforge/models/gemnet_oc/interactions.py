"""GemNet-OC's four message types: edge-edge triplets (also atom-edge and edge-atom) and quadruplets, and
atom-atom pairs (Gasteiger et al. 2022, §3). Each takes the embeddings it reads, the projected bases
of its sub-graph and the indices of its triplets / quadruplets."""

from __future__ import annotations

import math

import torch
from torch import nn

from atomforge.models.gemnet_oc.graphs import Quadruplets, Triplets
from atomforge.models.gemnet_oc.layers import Dense, EfficientBilinear, ScaleFactor, padded

INV_SQRT2 = 1 / math.sqrt(2.0)


class TripletInteraction(nn.Module):
    """Messages b->a into c->a through the angle cab: x_ba = Dense(in)·rbf(d_ba), down-projected, summed
    over b with cbf(d_ca, φ_cab) in the bilinear layer, up-projected.

    `symmetric`: the output edge c->a also receives the message computed for a->c (via `swap`),
    averaged (edge targets). Otherwise the output is per output element (edge-atom: atoms).
    """

    def __init__(self, in_dim: int, out_dim: int, trip_in: int, trip_out: int, rbf_dim: int, cbf_dim: int,
                 symmetric: bool):
        super().__init__()
        self.symmetric = symmetric
        self.dense_ba = Dense(in_dim, in_dim)
        self.mlp_rbf = Dense(rbf_dim, in_dim, activation=False)
        self.scale_rbf = ScaleFactor()
        self.down = Dense(in_dim, trip_in)
        self.bilinear = EfficientBilinear(trip_in, cbf_dim, trip_out)
        self.scale_cbf_sum = ScaleFactor()
        self.up_ca = Dense(trip_out, out_dim)
        self.up_ac = Dense(trip_out, out_dim) if symmetric else None

    def forward(self, x_in, rad, cir, trip: Triplets, swap=None, expand=None, reduce_to=None, num_targets=0):
        """x_in (E_in or N, in_dim) -> (E_out or num_targets, out_dim).

        rad (E_in, rbf) radial basis of the input edges; cir (rad_w (E_out, cbf, S), angular (T, S));
        expand (E_in,): gather atoms onto input edges (atom-edge); reduce_to (E_out,): sum output
        edges into their atoms after the bilinear aggregation (edge-atom).
        """
        x = self.dense_ba(x_in)
        if expand is not None:
            x = x[expand]
        x = self.scale_rbf(x * self.mlp_rbf(rad), x)
        x = self.down(x)[trip.into]  # (T, trip_in)
        rad_w, angular = cir
        x = self.scale_cbf_sum(self.bilinear(rad_w, angular, x, trip.out, trip.slot, reduce_to, num_targets), x)
        if not self.symmetric:
            return self.up_ca(x)
        return (self.up_ca(x) + self.up_ac(x)[swap]) * INV_SQRT2


class QuadrupletInteraction(nn.Module):
    """Messages d->b into c->a through b->a: rbf(d_db), cbf(d_ba, φ_abd) per inner triplet, sbf(d_ca,
    φ_cab, θ_cabd) per quadruplet in the bilinear layer; symmetric like the triplet interaction."""

    def __init__(self, edge_dim: int, quad_in: int, quad_out: int, rbf_dim: int, cbf_dim: int, sbf_dim: int):
        super().__init__()
        self.dense_db = Dense(edge_dim, edge_dim)
        self.mlp_rbf = Dense(rbf_dim, edge_dim, activation=False)
        self.scale_rbf = ScaleFactor()
        self.mlp_cbf = Dense(cbf_dim, quad_in, activation=False)
        self.scale_cbf = ScaleFactor()
        self.bilinear = EfficientBilinear(quad_in, sbf_dim, quad_out)
        self.scale_sbf_sum = ScaleFactor()
        self.down = Dense(edge_dim, quad_in)
        self.up_ca = Dense(quad_out, edge_dim)
        self.up_ac = Dense(quad_out, edge_dim)

    def forward(self, m, rad, cir, sph, inner: Triplets, quads: Quadruplets, swap):
        """m (E, edge_dim) -> (E, edge_dim). rad (E, rbf); cir (T_inner, cbf); sph (rad_w (E, sbf, S²), (Q, S²))."""
        x = self.dense_db(m)
        x = self.scale_rbf(x * self.mlp_rbf(rad), x)
        x = self.down(x)[inner.into]  # (T_inner, quad_in)
        x = self.scale_cbf(x * self.mlp_cbf(cir), x)
        x = x[quads.inner]  # (Q, quad_in)
        rad_w, angular = sph
        x = self.scale_sbf_sum(self.bilinear(rad_w, angular, x, quads.out, quads.slot), x)
        return (self.up_ca(x) + self.up_ac(x)[swap]) * INV_SQRT2


class PairInteraction(nn.Module):
    """Atom-atom messages over the long-range graph: Σ_b rbf(d_ba) ⊗ h_b, then bilinear (GemNet-OC §3)."""

    def __init__(self, atom_dim: int, pair_in: int, pair_out: int, rbf_dim: int):
        super().__init__()
        self.down = Dense(atom_dim, pair_in)
        self.bilinear = Dense(rbf_dim * pair_in, pair_out, activation=False)
        self.scale_rbf_sum = ScaleFactor()
        self.up = Dense(pair_out, atom_dim)

    def forward(self, h, rad, edges) -> torch.Tensor:
        """h (N, atom_dim); rad (E_aa, rbf); edges: the atom-atom `Edges` (slot = rank in dst)."""
        num_atoms = h.shape[0]
        x = self.down(h)[edges.src]  # (E_aa, pair_in)
        summed = padded(rad, edges.dst, edges.slot, num_atoms).transpose(1, 2) @ padded(x, edges.dst, edges.slot, num_atoms)
        out = self.scale_rbf_sum(self.bilinear(summed.reshape(num_atoms, summed.shape[1] * summed.shape[2])), x)
        return self.up(out)
