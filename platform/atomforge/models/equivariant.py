"""An e3nn backbone (NequIP-style): tensor-product convolutions with gated nonlinearities, l_max >= 2."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn
from torch.nn import functional as F  # noqa: N812

from atomforge.models.backbone import NUM_ATOM_TYPES, Backbone, BackboneInputs, NodeFeatures
from atomforge.models.hooks import AdaptiveLayerNorm, vector_harmonics
from atomforge.models.radial import ENVELOPES, BesselBasis, polynomial_envelope, radial_features, safe_norm


@dataclass(frozen=True)
class EquivariantConfig:
    """Channels per degree: scalars (l=0e), vectors (l=1o), higher (each l >= 2, parity (-1)^l)."""

    scalars: int = 64
    vectors: int = 32
    higher: int = 16
    l_max: int = 2
    num_layers: int = 4
    num_basis: int = 8
    radial_hidden: int = 64
    cutoff: float = 5.0
    condition_dim: int = 64
    avg_neighbors: float = 16.0
    envelope: str = "filter"  # radial.ENVELOPES; "basis" reproduces models saved before 66ec29b

    def __post_init__(self) -> None:
        if self.l_max < 2:
            raise ValueError(f"EquivariantConfig.l_max must be >= 2, got {self.l_max}")
        if self.envelope not in ENVELOPES:
            raise ValueError(f"EquivariantConfig.envelope must be one of {ENVELOPES}, got {self.envelope!r}")
        for name in ("scalars", "vectors", "higher", "num_layers", "num_basis", "radial_hidden", "cutoff"):
            if not getattr(self, name) > 0:
                raise ValueError(f"EquivariantConfig.{name} must be positive, got {getattr(self, name)}")

    @classmethod
    def tiny(cls) -> EquivariantConfig:
        return cls(scalars=16, vectors=8, higher=4, num_layers=2, num_basis=6, radial_hidden=16, cutoff=5.0, condition_dim=8)

    @classmethod
    def small(cls) -> EquivariantConfig:
        return cls()

    @classmethod
    def large(cls) -> EquivariantConfig:
        return cls(scalars=128, vectors=64, higher=32, l_max=3, num_layers=5, num_basis=8, radial_hidden=64,
                   cutoff=6.0, condition_dim=256)

    def node_irreps(self) -> o3.Irreps:
        muls = [self.scalars, self.vectors] + [self.higher] * (self.l_max - 1)
        return o3.Irreps([(mul, (degree, (-1) ** degree)) for degree, mul in enumerate(muls)])

    def build(self) -> EquivariantBackbone:
        return EquivariantBackbone(self)


class Convolution(nn.Module):
    """One interaction: adaLN on scalars, linear, edge tensor product weighted by a radial MLP, gate, residual."""

    def __init__(self, irreps: o3.Irreps, irreps_sh: o3.Irreps, config: EquivariantConfig):
        super().__init__()
        self.num_scalars = config.scalars
        self.scale = 1 / math.sqrt(config.avg_neighbors)
        self.norm = AdaptiveLayerNorm(config.scalars, config.condition_dim)
        self.linear_in = o3.Linear(irreps, irreps)
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(irreps):
            for j, (_, ir_edge) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_edge:
                    if ir_out.l <= config.l_max and ir_out.p == (-1) ** ir_out.l:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        mid = o3.Irreps(mid)
        mid_sorted, perm, _ = mid.sort()
        instructions = [(i, j, perm[k], mode, train) for i, j, k, mode, train in instructions]
        self.tp = o3.TensorProduct(irreps, irreps_sh, mid_sorted, instructions, shared_weights=False, internal_weights=False)
        self.radial = FullyConnectedNet([config.num_basis, config.radial_hidden, self.tp.weight_numel], F.silu)
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps if ir.l > 0])
        self.gate = Gate(f"{config.scalars}x0e", [F.silu], f"{gated.num_irreps}x0e", [torch.sigmoid], gated)
        self.linear_out = o3.Linear(mid_sorted.simplify(), self.gate.irreps_in)

    def forward(self, x, edge_sh, rbf, envelope, edge_index, condition, graph):
        src, dst = edge_index
        s, gate = self.norm(x[:, : self.num_scalars], condition, graph)
        h = self.linear_in(torch.cat([s, x[:, self.num_scalars :]], dim=-1))
        weights = self.radial(rbf) * envelope.unsqueeze(-1)  # (E, W): exactly 0 from the cutoff on
        messages = self.tp(h[src], edge_sh, weights)
        aggregated = messages.new_zeros(x.shape[0], messages.shape[1]).index_add_(0, dst, messages) * self.scale
        update = self.gate(self.linear_out(aggregated))
        if gate is not None:
            update = torch.cat([update[:, : self.num_scalars] * gate, update[:, self.num_scalars :]], dim=-1)
        return x + update


class EquivariantBackbone(Backbone):
    """NequIP-style backbone with the capability hooks; DeNS force encoding uses all degrees l <= l_max."""

    def __init__(self, config: EquivariantConfig):
        super().__init__()
        self.config = config
        self.irreps = config.node_irreps()
        self.irreps_sh = o3.Irreps.spherical_harmonics(config.l_max)
        # forward reads plain ints and modules only: torch.compile guards on every attribute forward
        # touches, and a guard on an e3nn Irrep fails (Irrep.__len__ raises)
        self.node_dim = self.irreps.dim
        self.edge_harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=False, normalization="component")
        self.num_scalars, self.num_vectors = config.scalars, config.vectors
        self.condition_dim, self.cutoff = config.condition_dim, config.cutoff
        self.embedding = nn.Embedding(NUM_ATOM_TYPES, config.scalars)
        self.rbf = BesselBasis(config.num_basis, config.cutoff)
        self.encode = o3.Linear(self.irreps_sh, self.irreps)  # per-degree linear map of Y_l(F̂)·‖F‖/√3
        self.layers = nn.ModuleList(Convolution(self.irreps, self.irreps_sh, config) for _ in range(config.num_layers))

    def forward(self, inputs: BackboneInputs) -> NodeFeatures:
        s = self.embedding(inputs.z)
        if inputs.freeze_embedding:
            s = s.detach()
        x = torch.cat([s, s.new_zeros(s.shape[0], self.node_dim - s.shape[1])], dim=-1)
        if inputs.vector_input is not None:
            x = x + self.encode(vector_harmonics(inputs.vector_input.to(x.dtype), self.config.l_max))
        r = safe_norm(inputs.edge_vec)
        edge_sh = self.edge_harmonics(inputs.edge_vec / r.unsqueeze(-1))
        rbf, envelope = radial_features(self.rbf(r), polynomial_envelope(r, self.cutoff), self.config.envelope)
        for layer in self.layers:
            x = layer(x, edge_sh, rbf, envelope, inputs.edge_index, inputs.condition, inputs.graph)
        f0, f1 = self.config.scalars, self.config.vectors
        vectors = x[:, f0 : f0 + 3 * f1].reshape(-1, f1, 3).transpose(1, 2)  # e3nn 1o is Cartesian xyz
        return NodeFeatures(scalars=x[:, :f0], vectors=vectors)
