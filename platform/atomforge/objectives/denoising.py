"""Coordinate denoising: prediction-head (Zaidi / seed 002 baseline), derivative (seed 002) and Noisy Nodes."""

from __future__ import annotations

import torch

from atomforge.models.backbone import Capability
from atomforge.objectives.corruption import Noised, free_atoms, gaussian_corruption
from atomforge.objectives.objective import Objective, ObjectiveContext, ObjectiveResult
from atomforge.objectives.supervised import energy_term, force_term, masked_mean, task_metrics

LOSSES = ("mse", "l1")


def _noise(batch, ctx: ObjectiveContext, sigma: float) -> tuple[torch.Tensor, Noised]:
    """ε ~ N(0, σ²) on every free atom (fixed atoms stay put). Returns (free atoms (N,) bool, the noised view)."""
    mask = free_atoms(batch)
    sigma_atom = torch.full((batch.pos.shape[0],), sigma, device=batch.pos.device)
    return mask, gaussian_corruption(batch, ctx, sigma_atom, mask)


def _reduce(err: torch.Tensor, mask: torch.Tensor, loss: str) -> torch.Tensor:
    """err (N, 3): mean over masked atoms and components of err² (mse) or |err| (l1)."""
    per_atom = (err * err).mean(dim=-1) if loss == "mse" else err.abs().mean(dim=-1)
    return masked_mean(per_atom, mask)


class CoordinateDenoising(Objective):
    """A vector head regresses ε/σ from the corrupted structure (free atoms). Zaidi: σ 0.04 Å, MSE;
    seed 002's prediction-head baseline: σ 0.1 Å, L1 (`prediction_head()`)."""

    requires = frozenset({Capability.NODE_VECTORS})

    def __init__(self, sigma: float = 0.04, loss: str = "mse", head: str = "noise", name: str = "denoise"):
        if loss not in LOSSES:
            raise ValueError(f"CoordinateDenoising.loss must be one of {LOSSES}, got {loss!r}")
        self.sigma, self.loss, self.head, self.name, self.heads = sigma, loss, head, name, (head,)

    @classmethod
    def zaidi(cls) -> CoordinateDenoising:
        return cls(0.04, "mse")

    @classmethod
    def prediction_head(cls) -> CoordinateDenoising:
        return cls(0.1, "l1", name="head_denoise")

    def run(self, model, batch, ctx: ObjectiveContext) -> ObjectiveResult:
        mask, view = _noise(batch, ctx, self.sigma)
        out = model(view.inputs, energy=False, vector_heads=(self.head,))
        loss = _reduce(out.vectors[self.head] - view.noise / self.sigma, mask, self.loss)
        return ObjectiveResult(loss, {f"noise_{self.loss}": float(loss.detach())})


class DerivativeDenoising(Objective):
    """Seed 002: the noise prediction is the energy's derivative, L1(-∂E/∂x̃ / s_F, -ε/σ), σ 0.1 Å.

    Physical sign: the energy rises away from the clean structure, so the force points back (-ε);
    the released code flips it. -∂E/∂x̃ is in eV/Å, divided by the task's s_F to be dimensionless.
    """

    name = "derivative_denoise"
    requires = frozenset({Capability.ENERGY_GRADIENT, Capability.TASK_HEADS})
    forces = "gradient"  # trains the energy's gradient

    def __init__(self, sigma: float = 0.1):
        self.sigma = sigma

    def run(self, model, batch, ctx: ObjectiveContext) -> ObjectiveResult:
        mask, view = _noise(batch, ctx, self.sigma)
        out = model(view.inputs, forces="gradient", create_graph=ctx.training)
        s_f = ctx.per_graph(batch, "force_std")[batch.batch].to(out.forces.dtype).unsqueeze(-1)
        loss = _reduce(out.forces / s_f + view.noise / self.sigma, mask, "l1")
        return ObjectiveResult(loss, {"noise_l1": float(loss.detach())})


class NoisyNodes(Objective):
    """Noisy Nodes as an auxiliary term: one pass on a slightly corrupted input gives the supervised
    JMP loss plus weight·MSE(ε̂, ε/σ). Contains the supervised loss (do not mix with JMPSupervised).
    SCD's fine-tuning values: σ 0.005 Å / weight 0.1 (molecules), 5e-4 / 0.01 (materials)."""

    name = "noisy_nodes"
    requires = frozenset({Capability.TASK_HEADS, Capability.NODE_VECTORS})
    labels = ("energy", "forces")
    heads = ("noise",)
    supervised = True

    def __init__(self, sigma: float = 0.005, weight: float = 0.1, forces: str = "direct"):
        self.sigma, self.weight, self.forces = sigma, weight, forces
        if forces == "gradient":
            self.requires = self.requires | {Capability.ENERGY_GRADIENT}

    def run(self, model, batch, ctx: ObjectiveContext) -> ObjectiveResult:
        mask, view = _noise(batch, ctx, self.sigma)
        out = model(view.inputs, forces=self.forces, vector_heads=("noise",), create_graph=ctx.training)
        e_term, f_term = energy_term(out.energy, batch, ctx), force_term(out.forces, batch, ctx)
        n_term = _reduce(out.vectors["noise"] - view.noise / self.sigma, mask, "mse")
        metrics = {"energy_loss": float(e_term.detach()), "force_loss": float(f_term.detach()), "noise_mse": float(n_term.detach())}
        metrics.update(task_metrics(out, batch, ctx))
        return ObjectiveResult(e_term.to(f_term.dtype) + f_term + self.weight * n_term, metrics)
