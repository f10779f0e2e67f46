"""PaiNN (Schütt et al. 2021): the default backbone, scalar + l=1 vector message passing, fast on CPU."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from atomforge.models.backbone import NUM_ATOM_TYPES, Backbone, BackboneInputs, NodeFeatures
from atomforge.models.hooks import AdaptiveLayerNorm, vector_harmonics
from atomforge.models.radial import ENVELOPES, BesselBasis, polynomial_envelope, radial_features, safe_norm


@dataclass(frozen=True)
class PaiNNConfig:
    """PaiNN hyperparameters. hidden F (scalars and vectors alike); cutoff Å; condition_dim 0 disables SCD."""

    hidden: int = 128
    num_layers: int = 4
    num_basis: int = 20
    cutoff: float = 6.0
    condition_dim: int = 64
    avg_neighbors: float = 16.0  # messages are summed then divided by sqrt(avg_neighbors)
    envelope: str = "filter"  # radial.ENVELOPES; "basis" reproduces models saved before 66ec29b

    def __post_init__(self) -> None:
        for name in ("hidden", "num_layers", "num_basis", "cutoff", "avg_neighbors"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PaiNNConfig.{name} must be positive, got {getattr(self, name)}")
        if self.envelope not in ENVELOPES:
            raise ValueError(f"PaiNNConfig.envelope must be one of {ENVELOPES}, got {self.envelope!r}")
        if self.condition_dim < 0:
            raise ValueError(f"PaiNNConfig.condition_dim must be >= 0, got {self.condition_dim}")

    @classmethod
    def tiny(cls) -> PaiNNConfig:
        """For tests: seconds on a CPU."""
        return cls(hidden=16, num_layers=2, num_basis=8, cutoff=5.0, condition_dim=8)

    @classmethod
    def small(cls) -> PaiNNConfig:
        """The demo / debug default."""
        return cls()

    @classmethod
    def large(cls) -> PaiNNConfig:
        """A pretraining-sized model (JMP-S order of magnitude in width, not in depth)."""
        return cls(hidden=256, num_layers=6, num_basis=32, cutoff=6.0, condition_dim=256)

    def build(self) -> PaiNN:
        return PaiNN(self)


class PaiNNMessage(nn.Module):
    """Continuous-filter message from src to dst; scalars enter through an adaptive LayerNorm."""

    def __init__(self, hidden: int, num_basis: int, condition_dim: int, scale: float):
        super().__init__()
        self.hidden, self.scale = hidden, scale
        self.norm = AdaptiveLayerNorm(hidden, condition_dim)
        self.phi = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden))
        self.filter = nn.Linear(num_basis, 3 * hidden)

    def forward(self, s, v, rbf, envelope, unit, edge_index, condition, graph):
        """s (N, F), v (N, 3, F), rbf (E, B), envelope (E,), unit (E, 3) dst->src. Returns updated (s, v)."""
        src, dst = edge_index
        h, gate = self.norm(s, condition, graph)
        # Envelope after the (biased) filter, as in PaiNN: the filter is exactly 0 from the cutoff on.
        x = self.phi(h)[src] * (self.filter(rbf) * envelope.unsqueeze(-1))  # (E, 3F)
        ds, dvv, dvs = x.split(self.hidden, dim=-1)
        dv = v[src] * dvv.unsqueeze(1) + dvs.unsqueeze(1) * unit.unsqueeze(-1)  # (E, 3, F)
        ds = torch.zeros_like(s).index_add_(0, dst, ds) * self.scale
        dv = torch.zeros_like(v).index_add_(0, dst, dv) * self.scale
        if gate is not None:
            ds, dv = ds * gate, dv * gate.unsqueeze(1)
        return s + ds, v + dv


class PaiNNUpdate(nn.Module):
    """Per-atom mixing of scalars and vector channels (invariant inner products and norms)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.u = nn.Linear(hidden, hidden, bias=False)
        self.v = nn.Linear(hidden, hidden, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden))

    def forward(self, s, v):
        uv, vv = self.u(v), self.v(v)  # (N, 3, F)
        a_vv, a_sv, a_ss = self.mlp(torch.cat([s, safe_norm(vv, dim=1)], dim=-1)).split(self.hidden, dim=-1)
        return s + a_ss + a_sv * (uv * vv).sum(dim=1), v + a_vv.unsqueeze(1) * uv


class PaiNN(Backbone):
    """PaiNN with the capability hooks: force encoding (l <= 1), adaLN conditioning, MASK type 0."""

    def __init__(self, config: PaiNNConfig):
        super().__init__()
        self.config = config
        f = config.hidden
        self.num_scalars = self.num_vectors = f
        self.condition_dim, self.cutoff = config.condition_dim, config.cutoff
        self.embedding = nn.Embedding(NUM_ATOM_TYPES, f)
        self.rbf = BesselBasis(config.num_basis, config.cutoff)
        # DeNS force encoding, per degree: l=0 (‖F‖/√3) -> scalars, l=1 (= F itself) -> vectors.
        self.encode_l0 = nn.Linear(1, f, bias=False)
        self.encode_l1 = nn.Linear(1, f, bias=False)
        scale = 1 / math.sqrt(config.avg_neighbors)
        self.messages = nn.ModuleList(PaiNNMessage(f, config.num_basis, config.condition_dim, scale) for _ in range(config.num_layers))
        self.updates = nn.ModuleList(PaiNNUpdate(f) for _ in range(config.num_layers))

    def forward(self, inputs: BackboneInputs) -> NodeFeatures:
        s = self.embedding(inputs.z)
        if inputs.freeze_embedding:
            s = s.detach()
        v = s.new_zeros(s.shape[0], 3, s.shape[1])
        if inputs.vector_input is not None:
            harmonics = vector_harmonics(inputs.vector_input.to(s.dtype), l_max=1)  # (N, 4)
            s = s + self.encode_l0(harmonics[:, :1])
            v = v + self.encode_l1(harmonics[:, 1:4].unsqueeze(-1))
        r = safe_norm(inputs.edge_vec)
        rbf, unit = self.rbf(r), inputs.edge_vec / r.unsqueeze(-1)
        rbf, envelope = radial_features(rbf, polynomial_envelope(r, self.cutoff), self.config.envelope)
        for message, update in zip(self.messages, self.updates):
            s, v = message(s, v, rbf, envelope, unit, inputs.edge_index, inputs.condition, inputs.graph)
            s, v = update(s, v)
        return NodeFeatures(scalars=s, vectors=v)
