"""GemNet-OC (Gasteiger et al. 2022), JMP's backbone, behind the atomforge backbone interface.

Outputs: scalars (N, atom_dim) = the global energy MLP over every block's atom readout (JMP's
backbone energy features; the per-task heads sum an MLP of them); vectors (N, 3, edge_dim) =
Σ_{edges c->a} x_F(c->a) ⊗ û_ac, the direct-force edge features carried to atoms along their unit
vectors, so a per-atom linear map of them is exactly GemNet-OC's edge-based force head
F_a = Σ_c f(x_F) û_ac and the model's equivariant vector heads read them like any backbone's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import nn

from atomforge.models.backbone import NUM_ATOM_TYPES, Backbone, BackboneInputs, NodeFeatures
from atomforge.models.gemnet_oc.bases import Bases
from atomforge.models.gemnet_oc.blocks import EdgeEmbedding, InteractionBlock, OutputBlock
from atomforge.models.gemnet_oc.graphs import gemnet_graphs
from atomforge.models.gemnet_oc.layers import Dense, padded, residual_stack
from atomforge.models.hooks import vector_harmonics

SUBGRAPH_CUTOFFS = ("cutoff_main", "cutoff_quad", "cutoff_atom_edge")
SUBGRAPH_CAPS = ("max_neighbors_main", "max_neighbors_quad", "max_neighbors_atom_edge")
MAY_BE_ZERO = ("condition_dim", "num_before_skip", "num_after_skip", "num_concat", "num_atom", "num_output_after_atom",
               "num_atom_emb_layers", "num_global_out_layers")


@dataclass(frozen=True)
class GemNetOCConfig:
    """GemNet-OC hyperparameters; defaults are JMP-S (`small()`). Sizes follow the paper's code
    (emb_size_atom -> atom_dim, emb_size_trip_in -> triplet_in, ...).

    Graphs: `cutoff` Å and `max_neighbors` are the atom-atom graph's, the largest, and the graph the
    model must be given (a task's cutoff and K); the main (embedding), quadruplet and atom-edge graphs
    are subsets of it with their own cutoff Å and per-atom cap. JMP uses one cutoff for all four
    (12 Å on OC20/OC22) and caps 30 / 8 / 20 / 1000.
    """

    num_blocks: int = 4
    atom_dim: int = 256
    edge_dim: int = 512
    triplet_in: int = 64
    triplet_out: int = 64
    quad_in: int = 32
    quad_out: int = 32
    atom_interaction_in: int = 64
    atom_interaction_out: int = 64
    rbf_dim: int = 16
    cbf_dim: int = 16
    sbf_dim: int = 32
    num_radial: int = 128
    num_spherical: int = 7
    num_before_skip: int = 2
    num_after_skip: int = 2
    num_concat: int = 1
    num_atom: int = 3
    num_output_after_atom: int = 3
    num_atom_emb_layers: int = 2
    num_global_out_layers: int = 2
    envelope_exponent: int = 5
    cutoff: float = 12.0
    cutoff_main: float = 12.0
    cutoff_quad: float = 12.0
    cutoff_atom_edge: float = 12.0
    max_neighbors: int = 1000
    max_neighbors_main: int = 30
    max_neighbors_quad: int = 8
    max_neighbors_atom_edge: int = 20
    condition_dim: int = 64

    def __post_init__(self) -> None:
        for f in fields(self):
            value, low = getattr(self, f.name), 0 if f.name in MAY_BE_ZERO else 1
            if isinstance(value, float) and not value > 0:
                raise ValueError(f"GemNetOCConfig.{f.name} must be positive, got {value}")
            if isinstance(value, int) and not value >= low:
                raise ValueError(f"GemNetOCConfig.{f.name} must be >= {low}, got {value}")
        for name in SUBGRAPH_CUTOFFS:
            if getattr(self, name) > self.cutoff:
                raise ValueError(f"GemNetOCConfig.{name}={getattr(self, name)} exceeds cutoff={self.cutoff} (the atom-atom graph, the largest)")
        for name in SUBGRAPH_CAPS:
            if getattr(self, name) > self.max_neighbors:
                raise ValueError(f"GemNetOCConfig.{name}={getattr(self, name)} exceeds max_neighbors={self.max_neighbors}")
        if self.num_spherical < 2:
            raise ValueError(f"GemNetOCConfig.num_spherical must be >= 2, got {self.num_spherical}")

    @classmethod
    def tiny(cls) -> GemNetOCConfig:
        """For tests: seconds on a CPU. Four distinct cutoffs, so each can be tested on its own."""
        return cls(num_blocks=2, atom_dim=16, edge_dim=32, triplet_in=8, triplet_out=8, quad_in=4, quad_out=4,
                   atom_interaction_in=8, atom_interaction_out=8, rbf_dim=4, cbf_dim=4, sbf_dim=8, num_radial=8,
                   num_spherical=3, num_before_skip=1, num_after_skip=1, num_atom=1, num_output_after_atom=1,
                   num_atom_emb_layers=1, num_global_out_layers=1, cutoff=5.0, cutoff_main=4.5, cutoff_quad=3.5,
                   cutoff_atom_edge=4.0, max_neighbors=30, max_neighbors_main=20, max_neighbors_quad=6,
                   max_neighbors_atom_edge=12, condition_dim=8)

    @classmethod
    def small(cls) -> GemNetOCConfig:
        """JMP-S: 4 blocks, atom 256, edge 512 (~38.9M backbone parameters in JMP)."""
        return cls()

    @classmethod
    def large(cls) -> GemNetOCConfig:
        """JMP-L: 6 blocks, edge 1024, triplet 64/128, quadruplet 64/32, rbf/cbf/sbf 32/16/64, 4 concat
        layers (~216.4M backbone parameters in JMP)."""
        return cls(num_blocks=6, edge_dim=1024, triplet_out=128, quad_in=64, quad_out=32, rbf_dim=32, sbf_dim=64,
                   num_concat=4, condition_dim=256)

    def build(self) -> GemNetOC:
        return GemNetOC(self)


class GemNetOC(Backbone):
    """GemNet-OC with the capability hooks: DeNS force encoding (l=0 into atoms, l=1 as projections on
    each main edge into its embedding), SCD adaLN in every block, MASK type 0, direct-force vectors."""

    def __init__(self, config: GemNetOCConfig):
        super().__init__()
        self.config = c = config
        a, e, b = c.atom_dim, c.edge_dim, c.num_blocks
        self.num_scalars, self.num_vectors = a, e
        self.condition_dim, self.cutoff = c.condition_dim, c.cutoff
        self.embedding = nn.Embedding(NUM_ATOM_TYPES, a)
        nn.init.uniform_(self.embedding.weight, -math.sqrt(3), math.sqrt(3))
        self.bases = Bases(c)
        self.edge_embedding = EdgeEmbedding(a, c.num_radial, e)
        # DeNS force encoding per degree: l=0 (‖F‖/√3) -> atoms; l=1 as F·û at both ends of a main edge.
        self.encode_l0 = nn.Linear(1, a, bias=False)
        self.encode_l1 = nn.Linear(2, e, bias=False)
        self.blocks = nn.ModuleList(InteractionBlock(c) for _ in range(b))
        self.outputs = nn.ModuleList(OutputBlock(a, e, c.rbf_dim, c.num_atom, c.num_output_after_atom) for _ in range(b + 1))
        self.energy_mlp = nn.Sequential(Dense(a * (b + 1), a), residual_stack(a, c.num_global_out_layers))
        self.force_mlp = nn.Sequential(Dense(e * (b + 1), e), residual_stack(e, c.num_global_out_layers))

    def forward(self, inputs: BackboneInputs) -> NodeFeatures:
        num_atoms = inputs.z.shape[0]
        g = gemnet_graphs(inputs.edge_index, inputs.edge_vec, inputs.shifts, num_atoms, self.config)
        bases = self.bases(g)
        h = self.embedding(inputs.z)
        if inputs.freeze_embedding:
            h = h.detach()
        m = self.edge_embedding(h, bases.rbf_main, g.main)
        if inputs.vector_input is not None:
            h, m = self._encode(inputs.vector_input.to(h.dtype), h, m, g.main)
        x_e, x_f = self.outputs[0](h, m, bases.output, g.main, num_atoms)
        xs_e, xs_f = [x_e], [x_f]
        for block, output in zip(self.blocks, self.outputs[1:]):
            h, m = block(h, m, bases, g, inputs.condition, inputs.graph)
            x_e, x_f = output(h, m, bases.output, g.main, num_atoms)
            xs_e.append(x_e)
            xs_f.append(x_f)
        scalars = self.energy_mlp(torch.cat(xs_e, dim=-1))
        edge_forces = self.force_mlp(torch.cat(xs_f, dim=-1))  # (E_main, edge_dim), zero at the main cutoff
        main = g.main
        units = padded(main.unit, main.dst, main.slot, num_atoms)  # (N, K, 3)
        vectors = units.transpose(1, 2) @ padded(edge_forces, main.dst, main.slot, num_atoms)  # (N, 3, edge_dim)
        return NodeFeatures(scalars=scalars, vectors=vectors)

    def _encode(self, forces, h, m, main):
        """DeNS: h += W0 ‖F‖/√3; m(c->a) += W1 [F_a·û, F_c·û] (invariant projections of the l=1 part)."""
        harmonics = vector_harmonics(forces, l_max=1)  # (N, 4); l=1 part equals F
        unit = main.unit
        projections = torch.stack([(forces[main.dst] * unit).sum(-1), (forces[main.src] * unit).sum(-1)], dim=-1)
        return h + self.encode_l0(harmonics[:, :1]), m + self.encode_l1(projections)
