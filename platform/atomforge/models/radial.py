"""Radial features of edges: a Bessel basis and a smooth polynomial envelope that vanishes at the cutoff.

Backbones multiply the envelope onto the *output* of their learned radial map (filter, radial MLP),
never only onto its input: a biased linear map of an enveloped basis is its bias at r = cutoff, so
the energy would jump when a pair leaves the graph. Envelope after the map makes every filter
exactly 0 at and beyond the cutoff, and twice continuously differentiable there (energy and forces
continuous).
"""

from __future__ import annotations

import math

import torch
from torch import nn

ENVELOPES = ("filter", "basis")  # where the envelope acts; "basis" only to read models made before 66ec29b


def radial_features(rbf: torch.Tensor, envelope: torch.Tensor, placement: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(basis, envelope) as a backbone applies them: for "filter" unchanged (envelope after the learned map);
    for "basis" the envelope moves onto the basis and the map's output is not enveloped, which is how
    atomforge computed until commit 66ec29b (energy discontinuous at the cutoff), so that models saved
    then predict what they predicted. rbf (E, B), envelope (E,)."""
    if placement == "basis":
        return rbf * envelope.unsqueeze(-1), torch.ones_like(envelope)
    return rbf, envelope


def polynomial_envelope(r: torch.Tensor, cutoff: float, p: int = 6) -> torch.Tensor:
    """DimeNet's envelope u(r/c) (E,): 1 at r=0; at r=c it and its first two derivatives are 0; 0 beyond."""
    x = (r / cutoff).clamp(max=1.0)
    value = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    return value * (r < cutoff)


class BesselBasis(nn.Module):
    """sqrt(2/c) sin(nπr/c)/r for n = 1..num_basis (DimeNet). r (E,) Å -> (E, num_basis), no envelope."""

    def __init__(self, num_basis: int, cutoff: float):
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("freq", torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi / cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return math.sqrt(2 / self.cutoff) * torch.sin(self.freq * r) / r.clamp(min=1e-6)


def safe_norm(x: torch.Tensor, dim: int = -1, keepdim: bool = False, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean norm with a finite gradient at zero."""
    return torch.sqrt((x * x).sum(dim=dim, keepdim=keepdim) + eps)
