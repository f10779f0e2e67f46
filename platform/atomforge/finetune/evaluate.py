"""Evaluation in physical units: MAE / RMSE of energies (meV, meV/atom) and forces (meV/Å) on a split.

Forces are compared per Cartesian component (the rMD17 / JMP convention). Property targets are
reported in the unit of their key (`property_mae`); mean-pooled ones as E/N.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import Data

from atomforge.finetune.config import FinetuneConfig
from atomforge.finetune.data import batches
from atomforge.tasks import TaskSpec

MILLI = 1000.0
EVAL_BATCH = 32


@dataclass
class Evaluation:
    """metrics: name -> value (units in the name); arrays: energy/forces predictions and labels."""

    metrics: dict[str, float]
    arrays: dict[str, np.ndarray]


def predict(model, items: Sequence[Data], config: FinetuneConfig) -> dict[str, np.ndarray]:
    """Predicted and true energies (G,) eV, atom counts (G,), forces (N, 3) eV/Å (energy+forces targets)."""
    model.eval()
    mode = config.target.forces if config.target.kind == "energy_forces" else None
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("energy_pred", "energy_true", "natoms", "forces_pred", "forces_true")}
    for batch in batches(items, EVAL_BATCH, shuffle=False):
        with torch.set_grad_enabled(mode == "gradient"):
            out = model(batch, forces=mode, create_graph=False)
        parts["energy_pred"].append(out.energy.detach().double().numpy())
        parts["energy_true"].append(batch.energy.double().numpy())
        parts["natoms"].append(batch.natoms.numpy())
        if mode is not None:
            parts["forces_pred"].append(out.forces.detach().double().numpy())
            parts["forces_true"].append(batch.forces.double().numpy())
    return {k: np.concatenate(v) if v else np.zeros((0, 3)) for k, v in parts.items()}


def metrics_from_arrays(arrays: dict[str, np.ndarray], config: FinetuneConfig) -> dict[str, float]:
    """MAE / RMSE in meV, meV/atom and meV/Å (or the property's unit)."""
    if config.target.kind == "property":
        scale = arrays["natoms"] if config.target.pooling == "mean" else 1.0
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


def evaluate(model, items: Sequence[Data], config: FinetuneConfig, spec: TaskSpec) -> Evaluation:
    """Metrics and arrays of `model` on graphs `items`."""
    arrays = predict(model, items, config)
    return Evaluation(metrics_from_arrays(arrays, config), arrays)


def selection_score(metrics: dict[str, float], config: FinetuneConfig, spec: TaskSpec) -> float:
    """The validation score early stopping minimises: the training loss's weighting of the MAEs."""
    if config.target.kind == "property":
        return metrics["property_mae"]
    energy = spec.energy_weight * metrics["energy_mae_meV"] / (MILLI * spec.energy_std)
    return energy + spec.force_weight * metrics["force_mae_meV_per_A"] / (MILLI * spec.force_std)
