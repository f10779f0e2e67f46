"""Capability hooks shared by backbones: DeNS force encoding harmonics and SCD adaptive LayerNorm."""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn
from torch.nn import functional as F  # noqa: N812


def vector_harmonics(vectors: torch.Tensor, l_max: int) -> torch.Tensor:
    """DeNS force encoding before the per-degree linear map: Y_l(v̂) · ‖v‖/√3, l = 0..l_max.

    vectors (N, 3), e.g. DeNS's normalised forces (zero rows encode nothing beyond l=0's ‖v‖ = 0).
    Returns (N, (l_max+1)²) in e3nn order, component normalisation (so l=1 is exactly v).
    """
    norm = torch.linalg.norm(vectors, dim=-1, keepdim=True)
    unit = vectors / norm.clamp(min=1e-9)
    harmonics = o3.spherical_harmonics(list(range(l_max + 1)), unit, normalize=False, normalization="component")
    return harmonics * norm / math.sqrt(3.0)


class AdaptiveLayerNorm(nn.Module):
    """LayerNorm of node scalars, modulated by a per-graph condition (adaLN; SCD).

    Unconditioned (condition_dim = 0): an ordinary affine LayerNorm and no gate.
    Conditioned: (shift, scale, gate) = Linear(SiLU(c)), zero-initialised so a fresh block behaves
    as an unconditioned one; returns LN(s)·(1+scale) + shift and the residual gate (1+gate).
    """

    def __init__(self, num_features: int, condition_dim: int):
        super().__init__()
        self.condition_dim = condition_dim
        self.norm = nn.LayerNorm(num_features, elementwise_affine=condition_dim == 0)
        if condition_dim > 0:
            self.modulation = nn.Linear(condition_dim, 3 * num_features)
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(self, scalars: torch.Tensor, condition: torch.Tensor | None, graph: torch.Tensor):
        """scalars (N, F); condition (G, C) or None; graph (N,). Returns (modulated (N, F), gate (N, F) | None)."""
        normed = self.norm(scalars)
        if self.condition_dim == 0:
            return normed, None
        if condition is None:
            raise ValueError("a conditioned backbone needs a condition (the model substitutes the null token)")
        shift, scale, gate = self.modulation(F.silu(condition))[graph].chunk(3, dim=-1)
        return normed * (1 + scale) + shift, 1 + gate
