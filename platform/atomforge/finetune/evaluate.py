"""Evaluation in physical units: MAE / RMSE of energies (meV, meV/atom) and forces (meV/Å) on a split's shard rows.

Forces are compared per Cartesian component (the rMD17 / JMP convention). Property targets (tasks
without force labels) are reported in the unit of their label (`property_mae`); per-atom ones
(`TaskData.per_atom`: an intensive property stored as N·value) as E/N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MILLI = 1000.0


@dataclass
class Evaluation:
    """metrics: name -> value (units in the name); arrays: energy/forces predictions and labels."""

    metrics: dict[str, float]
    arrays: dict[str, np.ndarray]


def predict(model, batches, forces: str | None) -> dict[str, np.ndarray]:
    """Predicted and true energies (G,) eV, atom counts (G,), forces (N, 3) eV/Å (forces "direct" | "gradient")."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("energy_pred", "energy_true", "natoms", "forces_pred", "forces_true")}
    for batch in batches:
        with torch.set_grad_enabled(forces == "gradient"):
            out = model(batch, forces=forces, create_graph=False)
        parts["energy_pred"].append(out.energy.detach().double().numpy())
        parts["energy_true"].append(batch.energy.double().numpy())
        parts["natoms"].append(batch.natoms.numpy())
        if forces is not None:
            parts["forces_pred"].append(out.forces.detach().double().numpy())
            parts["forces_true"].append(batch.forces.double().numpy())
    return {k: np.concatenate(v) if v else np.zeros((0, 3)) for k, v in parts.items()}


def metrics_from_arrays(arrays: dict[str, np.ndarray], has_forces: bool, per_atom: bool) -> dict[str, float]:
    """MAE / RMSE in meV, meV/atom and meV/Å, or the property's unit (per atom for a per-atom property)."""
    if not has_forces:
        scale = arrays["natoms"] if per_atom else 1.0
        err = (arrays["energy_pred"] - arrays["energy_true"]) / scale
        return {"property_mae": float(np.abs(err).mean()), "property_rmse": float(np.sqrt((err**2).mean()))}
    e_err = arrays["energy_pred"] - arrays["energy_true"]
    f_err = arrays["forces_pred"] - arrays["forces_true"]
    return {
        "energy_mae_meV": MILLI * float(np.abs(e_err).mean()),
        "energy_rmse_meV": MILLI * float(np.sqrt((e_err**2).mean())),
        "energy_mae_meV_per_atom": MILLI * float(np.abs(e_err / arrays["natoms"]).mean()),
        "force_mae_meV_per_A": MILLI * float(np.abs(f_err).mean()),
        "force_rmse_meV_per_A": MILLI * float(np.sqrt((f_err**2).mean())),
    }


def evaluate(model, batches, forces: str | None, per_atom: bool = False) -> Evaluation:
    """Metrics and arrays of `model` on `batches` (a shard loader's); forces None for a property task."""
    arrays = predict(model, batches, forces)
    return Evaluation(metrics_from_arrays(arrays, forces is not None, per_atom), arrays)
