"""Radial features of edges: a Bessel basis with a smooth polynomial envelope that vanishes at the cutoff."""

from __future__ import annotations

import math

import torch
from torch import nn


def polynomial_envelope(r: torch.Tensor, cutoff: float, p: int = 6) -> torch.Tensor:
    """DimeNet's envelope u(r/c) (E,): 1 at r=0, zero with p continuous derivatives at r=c, 0 beyond."""
    x = (r / cutoff).clamp(max=1.0)
    value = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    return value * (r < cutoff)


class BesselBasis(nn.Module):
    """sqrt(2/c) sin(nπr/c)/r for n = 1..num_basis, times the envelope. r (E,) Å -> (E, num_basis)."""

    def __init__(self, num_basis: int, cutoff: float):
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("freq", torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi / cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        basis = math.sqrt(2 / self.cutoff) * torch.sin(self.freq * r) / r.clamp(min=1e-6)
        return basis * polynomial_envelope(r, self.cutoff)


def safe_norm(x: torch.Tensor, dim: int = -1, keepdim: bool = False, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean norm with a finite gradient at zero."""
    return torch.sqrt((x * x).sum(dim=dim, keepdim=keepdim) + eps)
