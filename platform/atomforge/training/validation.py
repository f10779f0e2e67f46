"""Validation sums: the clean model's per-task errors and the objective mix's loss, mergeable over ranks.

Errors come from one clean forward pass per batch: no corruption, no force encoding
(`vector_input`), the null condition, forces as the mix parameterises them (`ObjectiveMix.force_mode`).
They depend on the weights only, so the same weights give the same validation errors whatever the
objective mix, its gates or its noise (DeNS corrupts some batches; a corrupted batch used to report
no MAE but still count in the divisor). Every validation structure with a label counts once:
energy MAE over structures with an energy (eV), force MAE over force components of free atoms
with force labels (eV/Å), and the energy MAE per atom (eV/atom). The mix's loss per structure (`loss`) and its objectives' own metrics are
reported too, as the same quantity as the training loss (see `training.reduction`).

Sums are keyed `<task>/<name>` so ranks merge them by addition; `validation_metrics` divides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from atomforge.objectives import ObjectiveContext, ObjectiveMix

_ERRORS = ("energy", "energy_per_atom", "force")


def clean_error_sums(model, batch, task_names: Sequence[str], forces: str) -> dict[str, float]:
    """Per task: Σ|Ê − E| (eV) and the count of labelled structures, Σ|F̂ − F| (eV/Å, per component)
    and the count of labelled free-atom components, from the clean model. forces: "direct" | "gradient"."""
    with torch.set_grad_enabled(forces == "gradient"):
        out = model(batch, forces=forces, create_graph=False)
    sums: dict[str, float] = {}
    atom_task = batch.task[batch.batch]
    free = ~batch.fixed.bool()
    with torch.no_grad():
        for t in torch.unique(batch.task).tolist():
            name = task_names[t]
            graphs = (batch.task == t) & batch.has_energy
            energy_err = (out.energy[graphs] - batch.energy[graphs].to(out.energy.dtype)).abs()
            atoms = (atom_task == t) & batch.has_forces[batch.batch] & free
            force_err = (out.forces[atoms] - batch.forces[atoms].to(out.forces.dtype)).abs()
            sums[f"{name}/energy_abs"] = float(energy_err.sum())
            sums[f"{name}/energy_count"] = float(energy_err.numel())
            sums[f"{name}/energy_per_atom_abs"] = float((energy_err / batch.natoms[graphs]).sum())
            sums[f"{name}/energy_per_atom_count"] = float(energy_err.numel())
            sums[f"{name}/force_abs"] = float(force_err.sum())
            sums[f"{name}/force_count"] = float(force_err.numel())
    return sums


def mix_sums(mix: ObjectiveMix, model, batch, ctx: ObjectiveContext, task: str) -> dict[str, float]:
    """The mix's loss and its objectives' metrics on a one-task batch, times its structure count.

    Objectives' own per-task MAEs are left out: they are measured on corrupted inputs (and missing
    where a gate corrupted the batch); the clean errors replace them."""
    result = mix.run(model, batch, ctx)
    n = float(batch.num_graphs)
    sums = {f"{task}/num": n, f"{task}/loss": float(result.loss.detach()) * n}
    for key, value in result.metrics.items():
        if key == "loss" or key.endswith("/weight") or "_mae/" in key:
            continue
        sums[f"{task}/{key}"] = float(value) * n
    return sums


def validation_sums(mix: ObjectiveMix, model, batch, ctx: ObjectiveContext, task: str) -> dict[str, float]:
    """Both kinds of sums for one validation batch of `task`."""
    return {**clean_error_sums(model, batch, ctx.task_names, mix.force_mode), **mix_sums(mix, model, batch, ctx, task)}


def merge(parts: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Key-wise sum (over batches and ranks)."""
    out: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = out.get(key, 0.0) + value
    return out


def validation_metrics(sums: Mapping[str, float]) -> dict[str, float]:
    """`val/<task>/energy_mae` (eV), `energy_per_atom_mae` (eV/atom), `val/<task>/force_mae` (eV/Å) where
    labels exist, `val/<task>/loss`
    and `val/<task>/<objective>/<metric>` per structure."""
    metrics: dict[str, float] = {}
    for key, total in sums.items():
        task, _, name = key.partition("/")
        kind = name.rsplit("_", 1)
        if len(kind) == 2 and kind[0] in _ERRORS and kind[1] in ("abs", "count"):
            if kind[1] == "abs" and sums[f"{task}/{kind[0]}_count"] > 0:
                metrics[f"val/{task}/{kind[0]}_mae"] = total / sums[f"{task}/{kind[0]}_count"]
        elif name != "num" and sums.get(f"{task}/num"):
            metrics[f"val/{task}/{name}"] = total / sums[f"{task}/num"]
    return metrics
