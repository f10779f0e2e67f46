"""The backbone interface: capabilities, the inputs a backbone reads and the node features it returns."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

MASK_Z = 0  # the MASK atom type: atomic number 0 never occurs in data, so it indexes its own embedding
NUM_ATOM_TYPES = 119  # 0 (MASK) .. 118


class Capability(str, Enum):
    """What a backbone (and the model around it) can do; objectives declare what they require (OBJECTIVES.md §8)."""

    NODE_SCALARS = "node_scalars"  # per-node invariant features
    NODE_VECTORS = "node_vectors"  # per-node l=1 features and equivariant vector heads
    ENERGY_GRADIENT = "energy_gradient"  # energy differentiable w.r.t. positions and strain
    VECTOR_INPUT = "vector_input"  # an encoded per-atom vector added to the initial features (DeNS)
    GRAPH_CONDITION = "graph_condition"  # per-graph condition in every block, learned null token (SCD)
    MASK_TOKEN = "mask_token"  # atomic number MASK_Z is a valid input type (H-masking)
    TASK_HEADS = "task_heads"  # per-task energy / force heads routed by batch.task (JMP)


@dataclass
class BackboneInputs:
    """What a backbone reads for one batch (N atoms, E edges, G graphs).

    z (N,) long, atomic numbers (MASK_Z for masked atoms); edge_index (2, E) [src, dst];
    edge_vec (E, 3) Å, pos[src] + shift @ cell - pos[dst] (computed by the caller from positions so
    gradients flow); graph (N,) long, graph id of each atom; num_graphs G;
    vector_input (N, 3) or None: a per-atom vector (DeNS: normalised forces, norm < 1) already zeroed where
    it must not be encoded; condition (G, C) or None: per-graph condition (the null token is
    substituted by the model, so a conditioned backbone normally always gets one);
    freeze_embedding: detach the atom-type embedding (SCD pretraining);
    shifts (E, 3) or None: the integer image shift of each edge's src (`atomforge.graph`), for
    backbones that must tell periodic images of one atom apart (GemNet-OC's reverse edges and
    distinct-image triplets); None means no edge crosses a periodic boundary.
    """

    z: torch.Tensor
    edge_index: torch.Tensor
    edge_vec: torch.Tensor
    graph: torch.Tensor
    num_graphs: int
    vector_input: torch.Tensor | None = None
    condition: torch.Tensor | None = None
    freeze_embedding: bool = False
    shifts: torch.Tensor | None = None


@dataclass
class NodeFeatures:
    """Backbone output: scalars (N, F_s) invariant; vectors (N, 3, F_v) equivariant (Cartesian xyz)."""

    scalars: torch.Tensor
    vectors: torch.Tensor


class Backbone(nn.Module):
    """Base class of backbones. Subclasses set the attributes below and implement `forward`.

    Attributes: num_scalars F_s, num_vectors F_v, condition_dim C (0 = no conditioning),
    cutoff Å (edges longer than this are dropped inside forward), capabilities.
    """

    num_scalars: int
    num_vectors: int
    condition_dim: int
    cutoff: float

    @property
    def capabilities(self) -> frozenset[Capability]:
        caps = {Capability.NODE_SCALARS, Capability.NODE_VECTORS, Capability.ENERGY_GRADIENT,
                Capability.VECTOR_INPUT, Capability.MASK_TOKEN}
        if self.condition_dim > 0:
            caps.add(Capability.GRAPH_CONDITION)
        return frozenset(caps)

    def atom_embedding_parameters(self) -> list[nn.Parameter]:
        """The atom-type embedding tables (every nn.Embedding of the backbone): what SCD freezes."""
        return [p for m in self.modules() if isinstance(m, nn.Embedding) for p in m.parameters()]

    def forward(self, inputs: BackboneInputs) -> NodeFeatures:  # pragma: no cover - interface
        raise NotImplementedError


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel / compiled wrapper (or the model itself)."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model
