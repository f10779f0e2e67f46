"""Supervised objectives: JMP multi-task energy/force (OBJECTIVES.md §1) and derivative force-field pretraining (§4)."""

from __future__ import annotations

import torch

from atomforge.models.backbone import Capability
from atomforge.objectives.corruption import free_atoms
from atomforge.objectives.objective import Objective, ObjectiveContext, ObjectiveResult


def per_graph_mean(values: torch.Tensor, mask: torch.Tensor, graph: torch.Tensor, num_graphs: int):
    """Mean of per-atom values (N,) over masked atoms within each graph -> ((G,), has_any (G,) bool)."""
    mask = mask.to(values.dtype)
    total = values.new_zeros(num_graphs).index_add_(0, graph, values * mask)
    count = values.new_zeros(num_graphs).index_add_(0, graph, mask)
    return total / count.clamp(min=1), count > 0


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over entries where mask is True; 0 (still attached to the graph) where none is."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def energy_target(energy: torch.Tensor, batch) -> torch.Tensor:
    """batch.energy (G,) where labelled, the (detached) prediction elsewhere: no NaN reaches a gradient."""
    return torch.where(batch.has_energy, batch.energy.to(energy.dtype), energy.detach())


def energy_term(energy: torch.Tensor, batch, ctx: ObjectiveContext) -> torch.Tensor:
    """mean over graphs with an energy label of λ_E,t |Ê - E| / s_E,t. energy (G,) float64 eV."""
    err = (energy - energy_target(energy, batch)).abs() * ctx.per_graph(batch, "energy_weight") / ctx.per_graph(batch, "energy_std")
    return masked_mean(err, batch.has_energy)


def force_term(forces: torch.Tensor, batch, ctx: ObjectiveContext) -> torch.Tensor:
    """JMP's structure-wise force loss: mean over structures of (1/n_free) Σ_free λ_F,t ‖F̂ - F‖ / s_F,t."""
    graph = batch.batch
    scale = (ctx.per_graph(batch, "force_weight") / ctx.per_graph(batch, "force_std"))[graph].to(forces.dtype)
    per_atom = torch.linalg.norm(forces - batch.forces.to(forces.dtype), dim=-1) * scale
    per_graph, has_atoms = per_graph_mean(per_atom, free_atoms(batch), graph, batch.num_graphs)
    return masked_mean(per_graph, batch.has_forces & has_atoms)


def stress_term(stress: torch.Tensor, batch, ctx: ObjectiveContext) -> torch.Tensor:
    """mean over graphs with a stress label of λ_S,t · mean_ij |Ŝ - S| (eV/Å³)."""
    err = (stress - batch.stress.to(stress.dtype)).abs().mean(dim=(1, 2)) * ctx.per_graph(batch, "stress_weight").to(stress.dtype)
    return masked_mean(err, batch.has_stress)


def task_metrics(out, batch, ctx: ObjectiveContext, graph_mask=None, atom_mask=None) -> dict[str, float]:
    """Per-task energy MAE (eV) and force MAE (eV/Å, per component, free atoms) where labels exist."""
    metrics: dict[str, float] = {}
    graph_mask = torch.ones_like(batch.has_energy) if graph_mask is None else graph_mask
    atom_mask = free_atoms(batch) if atom_mask is None else atom_mask & free_atoms(batch)
    for t in torch.unique(batch.task).tolist():
        name, in_task = ctx.task_names[t], (batch.task == t) & graph_mask
        with torch.no_grad():
            if out.energy is not None and bool((in_task & batch.has_energy).any()):
                sel = in_task & batch.has_energy
                metrics[f"energy_mae/{name}"] = float((out.energy[sel] - batch.energy[sel]).abs().mean())
            atoms = in_task[batch.batch] & (batch.has_forces[batch.batch]) & atom_mask
            if out.forces is not None and bool(atoms.any()):
                metrics[f"force_mae/{name}"] = float((out.forces[atoms] - batch.forces[atoms]).abs().mean())
    return metrics


class JMPSupervised(Objective):
    """JMP multi-task supervised loss: L = mean_b λ_E|ΔE|/s_E + mean_b (1/n_b)Σ_a λ_F‖ΔF‖/s_F [+ λ_S|ΔS|].

    forces: "direct" (JMP's per-task heads), "gradient" (-∂E/∂x, conservative) or None (energy
    only: a per-structure property); stress: add the stress term (needs gradient-capable energy).
    Weights and normalisers come from ctx.tasks.
    """

    name = "jmp"
    requires = frozenset({Capability.TASK_HEADS, Capability.NODE_SCALARS, Capability.NODE_VECTORS})
    labels = ("energy", "forces")
    supervised = True

    def __init__(self, forces: str | None = "direct", stress: bool = False):
        if forces not in ("direct", "gradient", None):
            raise ValueError(f"JMPSupervised.forces must be 'direct', 'gradient' or None, got {forces!r}")
        self.forces, self.stress = forces, stress
        if forces is None:
            self.labels = ("energy",)
        if forces == "gradient" or stress:
            self.requires = self.requires | {Capability.ENERGY_GRADIENT}
        if stress:
            self.optional_labels = ("stress",)

    def run(self, model, batch, ctx: ObjectiveContext) -> ObjectiveResult:
        out = model(batch, forces=self.forces, stress=self.stress, create_graph=ctx.training)
        loss = e_term = energy_term(out.energy, batch, ctx)
        metrics = {"energy_loss": float(e_term.detach())}
        if self.forces is not None:
            f_term = force_term(out.forces, batch, ctx)
            loss = e_term.to(f_term.dtype) + f_term
            metrics["force_loss"] = float(f_term.detach())
        if self.stress:
            s_term = stress_term(out.stress, batch, ctx)
            loss = loss + s_term
            metrics["stress_loss"] = float(s_term.detach())
        metrics.update(task_metrics(out, batch, ctx))
        return ObjectiveResult(loss, metrics)


class DerivativeForceField(Objective):
    """Derivative force-field pretraining (seed 002): w_E·L1(E/atom) + w_F·L1(F) + w_S·L1(S), F = -∂E/∂x.

    Physical units as in the paper: energy per atom (eV), force components (eV/Å) of free atoms,
    stress components (eV/Å³); best ratio reported 1:500:500. Graphs/atoms without a label and
    fixed atoms are skipped; when no task has stress labels the stress term is off, and
    `ObjectiveMix.check_labels` says so at the start of the run.
    """

    name = "derivative_ff"
    requires = frozenset({Capability.ENERGY_GRADIENT})
    labels = ("energy", "forces")
    optional_labels = ("stress",)
    supervised = True
    forces = "gradient"

    def __init__(self, energy_weight: float = 1.0, force_weight: float = 500.0, stress_weight: float = 500.0):
        self.energy_weight, self.force_weight, self.stress_weight = energy_weight, force_weight, stress_weight

    def run(self, model, batch, ctx: ObjectiveContext) -> ObjectiveResult:
        use_stress = self.stress_weight > 0 and bool(batch.has_stress.any())
        out = model(batch, forces="gradient", stress=use_stress, create_graph=ctx.training)
        e_err = (out.energy - energy_target(out.energy, batch)).abs() / batch.natoms
        e_term = masked_mean(e_err, batch.has_energy).to(out.forces.dtype)
        f_err = (out.forces - batch.forces.to(out.forces.dtype)).abs().mean(dim=-1)
        f_term = masked_mean(f_err, batch.has_forces[batch.batch] & free_atoms(batch))  # fixed atoms: no loss
        loss = self.energy_weight * e_term + self.force_weight * f_term
        metrics = {"energy_loss": float(e_term.detach()), "force_loss": float(f_term.detach())}
        if use_stress:
            s_err = (out.stress - batch.stress.to(out.stress.dtype)).abs().mean(dim=(1, 2))
            s_term = masked_mean(s_err, batch.has_stress)
            loss = loss + self.stress_weight * s_term
            metrics["stress_loss"] = float(s_term.detach())
        metrics.update(task_metrics(out, batch, ctx))
        return ObjectiveResult(loss, metrics)
