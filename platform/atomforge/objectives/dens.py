"""DeNS (seed 001): denoising non-equilibrium structures, conditioned on the original forces (OBJECTIVES.md §2)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from atomforge.models.backbone import Capability
from atomforge.models.inputs import ModelInputs
from atomforge.objectives.corruption import Noised, free_atoms, gaussian_corruption, uniform
from atomforge.objectives.objective import Objective, ObjectiveContext, ObjectiveResult
from atomforge.objectives.supervised import energy_term, masked_mean, per_graph_mean, task_metrics


def _per_task(value: float | Mapping[str, float], ctx: ObjectiveContext, batch, field: str) -> torch.Tensor:
    """(G,) float64: a scalar, or a mapping task name -> value (missing tasks raise)."""
    if not isinstance(value, Mapping):
        return torch.full((batch.num_graphs,), float(value), dtype=torch.float64, device=batch.task.device)
    missing = [n for n in ctx.task_names if n not in value]
    if missing:
        raise ValueError(f"DeNS.{field}: no value for tasks {missing}")
    return torch.tensor([float(value[n]) for n in ctx.task_names], dtype=torch.float64, device=batch.task.device)[batch.task]


def encoded_forces(forces: torch.Tensor, force_std: torch.Tensor, corrupted: torch.Tensor) -> torch.Tensor:
    """DeNS's force input (N, 3), dimensionless: u·/√(1 + ‖u‖²) with u = F/s_F on corrupted atoms, 0 elsewhere.

    forces (N, 3) eV/Å; force_std (N, 1) the task's s_F in eV/Å; corrupted (N,) bool. The released
    code encodes raw forces into an Equiformer whose every block starts with an equivariant
    LayerNorm, so no block sees their scale. PaiNN, GemNet-OC and our e3nn model have no norm on
    vector features, and PaiNN's update is polynomial in them (v·v, gated by |v|, every layer), so
    raw forces (OC20 / ANI-1x up to ~17 eV/Å) blew a pretraining run up to loss 1e8 and F/s_F alone
    (outliers at 8 s_F) still did. Here the encoding normalises itself: F/s_F makes it independent
    of the force unit, the saturating magnitude keeps its norm below 1 for any force, and the
    direction is exact and the magnitude monotone, so the input still tells which structure to
    denoise towards.
    """
    u = forces / force_std
    return u * torch.rsqrt(1.0 + (u * u).sum(-1, keepdim=True)) * corrupted.unsqueeze(-1)


class DeNS(Objective):
    """Supervised energy/force training with DeNS samples mixed in; contains the supervised loss (forces once).

    gate: "batch" (OC20/OC22 code: the whole batch is a DeNS sample with probability p) or
    "structure" (MD17 code: each structure independently). In a DeNS structure each free atom is
    corrupted with probability `ratio`, ε ~ N(0, σ²); structures without force labels are never
    corrupted, MD frames only where their task's `TaskSpec.dens_md_frames` allows it (the OC20/OC22
    code never corrupts MD frames, the MD17 code does: every rMD17 frame is one). forces: "direct"
    (the force head, as released) or "gradient" (-∂E/∂x of the corrupted structure for uncorrupted
    atoms, the noise head for corrupted ones: conservative fine-tuning, e.g. rMD17). sigma: Å, a
    float or per task; multiscale (σ_low, σ_high, levels): σ per structure from a geometric
    progression, target ε/σ_high (the released option). Corrupted atoms' original forces are encoded
    as the vector input, normalised by their task's s_F and saturated below norm 1 (`encoded_forces`). Loss per structure:
    λ_E|Ê − E|/s_E + mean_{i free} w_i ‖v̂_i − t_i‖ with (v̂, t, w) = (noise head, ε/σ, λ_D) on
    corrupted atoms and (F̂/s_F, F/s_F, λ_F) elsewhere; the energy target is the original structure's.
    noise_weight λ_D: float or per task; decay: λ_D·(1 − step/total_steps).
    """

    name = "dens"
    requires = frozenset({Capability.TASK_HEADS, Capability.NODE_VECTORS, Capability.VECTOR_INPUT})
    labels = ("energy", "forces")
    heads = ("noise",)
    supervised = True

    def __init__(self, probability: float = 0.5, gate: str = "batch", ratio: float = 0.5,
                 sigma: float | Mapping[str, float] = 0.1, multiscale: tuple[float, float, int] | None = None,
                 noise_weight: float | Mapping[str, float] = 10.0, decay: bool = False, force_encoding: bool = True,
                 forces: str = "direct"):
        if gate not in ("batch", "structure"):
            raise ValueError(f"DeNS.gate must be 'batch' or 'structure', got {gate!r}")
        if forces not in ("direct", "gradient"):
            raise ValueError(f"DeNS.forces must be 'direct' or 'gradient', got {forces!r}")
        self.forces = forces
        if forces == "gradient":
            self.requires = self.requires | {Capability.ENERGY_GRADIENT}
        for name, value in (("probability", probability), ("ratio", ratio)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"DeNS.{name} must be in [0, 1], got {value}")
        self.probability, self.gate, self.ratio = probability, gate, ratio
        self.sigma, self.multiscale, self.noise_weight = sigma, multiscale, noise_weight
        self.decay, self.force_encoding = decay, force_encoding

    def corruption(self, batch, ctx: ObjectiveContext):
        """Returns (dens_graph (G,) bool, corrupted (N,) bool, sigma (G,) Å, target_scale (G,) Å)."""
        num_graphs, graph = batch.num_graphs, batch.batch
        md_allowed = ctx.per_graph(batch, "dens_md_frames").bool()
        eligible = (~batch.is_md.bool() | md_allowed) & batch.has_forces.bool()
        draws = uniform((1,) if self.gate == "batch" else (num_graphs,), ctx, batch.pos.device)
        dens_graph = eligible & (draws < self.probability)
        corrupted = dens_graph[graph] & free_atoms(batch) & (uniform((batch.pos.shape[0],), ctx, batch.pos.device) < self.ratio)
        if self.multiscale is None:
            sigma = _per_task(self.sigma, ctx, batch, "sigma")
            return dens_graph, corrupted, sigma, sigma
        low, high, levels = self.multiscale
        table = torch.as_tensor(np.geomspace(low, high, int(levels)), dtype=torch.float64, device=batch.pos.device)
        level = (uniform((num_graphs,), ctx, batch.pos.device) * levels).long().clamp(max=levels - 1)
        return dens_graph, corrupted, table[level], torch.full_like(table[level], high)

    def corrupted_inputs(self, batch, ctx: ObjectiveContext, corrupted: torch.Tensor, sigma: torch.Tensor) -> Noised:
        """The model's inputs for one step: `corrupted` atoms (N,) bool moved by ε ~ N(0, σ²) (sigma (G,)
        Å), their original forces encoded as the vector input (`encoded_forces`); the clean batch when none is."""
        if not bool(corrupted.any()):
            return Noised(ModelInputs.clean(batch), torch.zeros_like(batch.pos))
        view = gaussian_corruption(batch, ctx, sigma[batch.batch], corrupted)
        if not self.force_encoding:
            return view
        s_f = ctx.per_graph(batch, "force_std")[batch.batch].to(batch.forces.dtype).unsqueeze(-1)
        return Noised(view.inputs.replace(vector_input=encoded_forces(batch.forces, s_f, corrupted)), view.noise)

    def run(self, model, batch, ctx: ObjectiveContext) -> ObjectiveResult:
        dens_graph, corrupted, sigma, target_scale = self.corruption(batch, ctx)
        graph = batch.batch
        view = self.corrupted_inputs(batch, ctx, corrupted, sigma)
        out = model(view.inputs, forces=self.forces, vector_heads=("noise",), create_graph=ctx.training)
        e_term = energy_term(out.energy, batch, ctx)
        s_f = ctx.per_graph(batch, "force_std")[graph].to(out.forces.dtype).unsqueeze(-1)
        noise_target = view.noise / target_scale[graph].to(view.noise.dtype).unsqueeze(-1)
        is_noise = corrupted.unsqueeze(-1)
        pred = torch.where(is_noise, out.vectors["noise"], out.forces / s_f)
        target = torch.where(is_noise, noise_target, batch.forces / s_f)
        lambda_d = _per_task(self.noise_weight, ctx, batch, "noise_weight")
        if self.decay:
            lambda_d = lambda_d * max(0.0, 1.0 - ctx.step / max(ctx.total_steps, 1))
        weight = torch.where(corrupted, lambda_d[graph], ctx.per_graph(batch, "force_weight")[graph]).to(pred.dtype)
        per_atom = weight * torch.linalg.norm(pred - target, dim=-1)
        per_graph, has_atoms = per_graph_mean(per_atom, free_atoms(batch), graph, batch.num_graphs)
        f_term = masked_mean(per_graph, batch.has_forces & has_atoms)
        metrics = {"energy_loss": float(e_term.detach()), "atom_loss": float(f_term.detach()),
                   "dens_fraction": float(dens_graph.double().mean())}
        if bool(corrupted.any()):
            metrics["noise_l2mae"] = float(torch.linalg.norm(pred - target, dim=-1)[corrupted].mean().detach())
        metrics.update(task_metrics(out, batch, ctx, graph_mask=~dens_graph))
        return ObjectiveResult(e_term.to(f_term.dtype) + f_term, metrics)
