"""The ASE calculator: an AtomisticModel task head as `atoms.calc` (energy, forces, stress when periodic).

Each call builds the neighbor graph afresh (`atomforge.neighbor_graph` at the task's cutoff and K,
periodic images included), runs the model and returns physical units: energy eV (the model
de-normalises with the task's s_E, μ_E and per-element linear reference, stored as its buffers),
forces eV/Å, stress eV/Å³ in ASE's Voigt order and sign ((1/V)∂E/∂ε, positive under tension).
Gradient forces (-∂E/∂x) are conservative, so MD with them conserves energy; direct heads are not.
"""

from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from atomforge.batch import collate
from atomforge.models.atomistic import FORCE_MODES
from atomforge.models.inputs import ModelInputs
from atomforge.schema import Structure
from atomforge.tasks import TaskSpec


class AtomforgeCalculator(Calculator):
    """ASE calculator for one task of an AtomisticModel.

    Args:
        model: an AtomisticModel (e.g. from `atomforge.load_pretrained`), used in eval mode.
        spec: the task's TaskSpec (name, cutoff Å, max_neighbors).
        forces: "gradient" (-∂E/∂x) or "direct" (the task's force head).
        device: where the model runs.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model, spec: TaskSpec, forces: str = "gradient", device: str | torch.device = "cpu", **kwargs):
        super().__init__(**kwargs)
        if forces not in FORCE_MODES:
            raise ValueError(f"forces must be one of {FORCE_MODES}, got {forces!r}")
        if spec.name not in model.tasks:
            raise ValueError(f"task {spec.name!r} is not a head of this model ({list(model.tasks)})")
        self.model = model.to(device).eval()
        self.spec, self.forces_mode, self.device = spec, forces, torch.device(device)
        self.task_index = list(model.tasks).index(spec.name)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        batch = collate([structure_of(self.atoms)], self.spec.cutoff, self.spec.max_neighbors,
                        tasks=[self.task_index]).to(self.device)
        periodic = bool(self.atoms.pbc.any())
        stress = periodic and "stress" in properties
        dtype = next(self.model.parameters()).dtype  # a float64 model sees float64 positions and cell
        inputs = ModelInputs.clean(batch).replace(
            positions=torch.as_tensor(self.atoms.positions, dtype=dtype, device=self.device),
            cell=torch.as_tensor(self.atoms.cell.array, dtype=dtype, device=self.device).unsqueeze(0))
        with torch.set_grad_enabled(self.forces_mode == "gradient" or stress):
            out = self.model(inputs, forces=self.forces_mode, stress=stress, create_graph=False)
        energy = float(out.energy.detach()[0])
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": out.forces.detach().double().cpu().numpy()}
        if stress:
            self.results["stress"] = full_3x3_to_voigt_6_stress(out.stress.detach()[0].double().cpu().numpy())


def structure_of(atoms) -> Structure:
    """A label-free Structure of an `ase.Atoms` (cell kept when periodic or set)."""
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    has_cell = bool(atoms.pbc.any() or np.abs(cell).sum() > 0)
    return Structure("ase-calculator", atoms.numbers, atoms.positions, cell=cell if has_cell else None,
                     pbc=np.asarray(atoms.pbc, dtype=bool))
