"""GemNet-OC's basis functions and their shared projections (computed once per forward, used by every block).

Radial: Gaussians on d/c in [0, 1] times the polynomial envelope u_p(d/c) (p = 5), one per sub-graph
cutoff c, so every radial feature and everything multiplied by it vanishes smoothly at its cutoff.
Angular: Y_l0(cos φ) = sqrt((2l+1)/4π) P_l(cos φ), l < num_spherical ("spherical_harmonics" with m = 0);
quadruplets use the outer product Y_l0(cos φ_cab) Y_l'0(cos θ_cabd) ("legendre_outer", as JMP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from atomforge.models.gemnet_oc.graphs import cosine, dihedral_cosine, plane_normal
from atomforge.models.gemnet_oc.layers import he_orthogonal_, shared
from atomforge.models.radial import polynomial_envelope


class GaussianBasis(nn.Module):
    """d (E,) Å -> (E, num_radial): exp(-(d/c - μ_k)² / 2σ²), μ_k = linspace(0, 1), σ = spacing, × u_p(d/c)."""

    def __init__(self, num_radial: int, cutoff: float, exponent: int):
        super().__init__()
        self.cutoff, self.exponent = cutoff, exponent
        self.register_buffer("centers", torch.linspace(0.0, 1.0, num_radial))
        self.coeff = -0.5 * (num_radial - 1) ** 2

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        x = (d / self.cutoff).unsqueeze(-1)
        envelope = polynomial_envelope(d, self.cutoff, self.exponent).unsqueeze(-1)
        return envelope * torch.exp(self.coeff * (x - self.centers) ** 2)


def legendre(cos: torch.Tensor, num_spherical: int) -> torch.Tensor:
    """Y_l0 of cos (M,) for l = 0 .. num_spherical - 1 -> (M, num_spherical), by Bonnet's recurrence."""
    p = [torch.ones_like(cos), cos]
    for degree in range(2, num_spherical):
        p.append(((2 * degree - 1) * cos * p[-1] - (degree - 1) * p[-2]) / degree)
    norm = [math.sqrt((2 * degree + 1) / (4 * math.pi)) for degree in range(num_spherical)]
    return torch.stack([n * q for n, q in zip(norm, p[:num_spherical])], dim=-1)


class BasisProjection(nn.Module):
    """A raw radial basis (E, R) -> (E, D, S): one learned radial function per (output channel, angular
    order), shared by all blocks (its gradient divided by their number)."""

    def __init__(self, num_radial: int, features: int, num_angular: int, num_uses: int):
        super().__init__()
        self.features, self.num_angular, self.num_uses = features, num_angular, num_uses
        self.weight = nn.Parameter(torch.empty(features * num_angular, num_radial))
        he_orthogonal_(self.weight, num_radial)

    def forward(self, rad: torch.Tensor) -> torch.Tensor:
        out = rad @ shared(self.weight, self.num_uses).T
        return out.view(rad.shape[0], self.features, self.num_angular)


@dataclass
class BasisSet:
    """Projected bases. `*_rad` (E, emb_rbf) per input edge; `*_cir`/`*_sph` (rad_w, angular): rad_w
    (E_out, D, S) per output element and angular (T, S) per triplet / quadruplet; quad_cir (T_inner, emb_cbf)."""

    rbf_main: torch.Tensor
    e2e_rad: torch.Tensor
    e2e_cir: tuple[torch.Tensor, torch.Tensor]
    quad_rad: torch.Tensor
    quad_cir: torch.Tensor
    quad_sph: tuple[torch.Tensor, torch.Tensor]
    a2e_rad: torch.Tensor
    a2e_cir: tuple[torch.Tensor, torch.Tensor]
    e2a_rad: torch.Tensor
    e2a_cir: tuple[torch.Tensor, torch.Tensor]
    a2a_rad: torch.Tensor
    atom_update: torch.Tensor
    output: torch.Tensor


class Bases(nn.Module):
    """Raw bases on each sub-graph and their projections shared across blocks (GemNet-OC §3)."""

    def __init__(self, config):
        super().__init__()
        r, s, p, b = config.num_radial, config.num_spherical, config.envelope_exponent, config.num_blocks
        self.num_spherical = s
        self.rbf_main = GaussianBasis(r, config.cutoff_main, p)
        self.rbf_quad = GaussianBasis(r, config.cutoff_quad, p)
        self.rbf_atom_edge = GaussianBasis(r, config.cutoff_atom_edge, p)
        self.rbf_atom = GaussianBasis(r, config.cutoff, p)

        def radial(uses=b):
            return BasisProjection(r, config.rbf_dim, 1, uses)

        self.e2e_rad, self.e2e_cir = radial(), BasisProjection(r, config.cbf_dim, s, b)
        self.quad_rad, self.quad_cir = radial(), BasisProjection(r, config.cbf_dim, s, b)
        self.quad_sph = BasisProjection(r, config.sbf_dim, s * s, b)
        self.a2e_rad, self.a2e_cir = radial(), BasisProjection(r, config.cbf_dim, s, b)
        self.e2a_rad, self.e2a_cir = radial(), BasisProjection(r, config.cbf_dim, s, b)
        self.a2a_rad = radial()
        self.atom_update, self.output = radial(), radial(b + 1)

    def forward(self, g) -> BasisSet:
        """g: the `GemNetGraphs` of the batch."""
        main, quad, ae, aa = g.main, g.quad, g.atom_edge, g.atom
        s = self.num_spherical
        rbf_main = self.rbf_main(main.dist)  # (E_m, R)
        rbf_quad, rbf_ae = self.rbf_quad(quad.dist), self.rbf_atom_edge(ae.dist)
        e2e_angle = legendre(cosine(main.unit[g.e2e.into], main.unit[g.e2e.out]), s)
        inner, outer, q = g.quad_inner, g.quad_outer, g.quads
        inner_angle = legendre(cosine(-quad.unit[inner.out], main.unit[inner.into]), s)  # angle a-b-d
        quad_cir = (self.quad_cir(rbf_quad)[inner.out] @ inner_angle.unsqueeze(-1)).squeeze(-1)  # (T_in, D)
        outer_angle = legendre(cosine(quad.unit[outer.into], main.unit[outer.out]), s)  # angle c-a-b
        # The dihedral c-a-b-d around the a->b axis, from the normals of the planes (c, a, b) and (a, b, d).
        n_cab = plane_normal(main.unit[outer.out], quad.unit[outer.into])
        n_abd = plane_normal(main.unit[inner.into], quad.unit[inner.out])
        dihedral = legendre(dihedral_cosine(n_cab[q.outer], n_abd[q.inner]), s)
        quad_angle = (outer_angle[q.outer].unsqueeze(-1) * dihedral.unsqueeze(-2)).reshape(-1, s * s)
        a2e_angle = legendre(cosine(ae.unit[g.a2e.into], main.unit[g.a2e.out]), s)
        e2a_angle = legendre(cosine(main.unit[g.e2a.into], ae.unit[g.e2a.out]), s)
        return BasisSet(
            rbf_main=rbf_main,
            e2e_rad=self.e2e_rad(rbf_main).squeeze(-1), e2e_cir=(self.e2e_cir(rbf_main), e2e_angle),
            quad_rad=self.quad_rad(rbf_main).squeeze(-1), quad_cir=quad_cir,
            quad_sph=(self.quad_sph(rbf_main), quad_angle),
            a2e_rad=self.a2e_rad(rbf_ae).squeeze(-1), a2e_cir=(self.a2e_cir(rbf_main), a2e_angle),
            e2a_rad=self.e2a_rad(rbf_main).squeeze(-1), e2a_cir=(self.e2a_cir(rbf_ae), e2a_angle),
            a2a_rad=self.a2a_rad(self.rbf_atom(aa.dist)).squeeze(-1),
            atom_update=self.atom_update(rbf_main).squeeze(-1), output=self.output(rbf_main).squeeze(-1),
        )
