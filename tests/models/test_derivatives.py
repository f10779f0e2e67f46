"""Conservative forces and stress equal finite differences of the energy (float64)."""

from __future__ import annotations

import torch
from atomforge.models import ModelInputs


def test_gradient_forces_match_central_differences(kit, backbone_kind):
    model = kit.make_model(backbone_kind, double=True)
    batch = kit.make_batch([kit.labelled(kit.slab(), "s"), kit.labelled(kit.ethanol(), "m")], tasks=[0, 1], double=True)
    forces = model(batch, forces="gradient").forces.detach()
    clean = ModelInputs.clean(batch)
    h = 1e-5
    for atom, axis in ((0, 0), (5, 2), (12, 1), (14, 0)):
        energies = []
        for sign in (1, -1):
            pos = batch.pos.clone()
            pos[atom, axis] += sign * h
            energies.append(model(clean.replace(positions=pos)).energy.sum())
        numeric = -(energies[0] - energies[1]) / (2 * h)
        torch.testing.assert_close(forces[atom, axis], numeric, rtol=1e-5, atol=1e-7)


def test_stress_matches_finite_strain_derivative(kit, backbone_kind):
    model = kit.make_model(backbone_kind, double=True)
    batch = kit.make_batch([kit.labelled(kit.cu_bulk(), "b")], double=True)
    stress = model(batch, forces="gradient", stress=True).stress.detach()[0]
    volume = torch.linalg.det(batch.cell[0]).abs()
    clean = ModelInputs.clean(batch)
    h = 1e-5
    for i, j in ((0, 0), (1, 2), (2, 2)):
        energies = []
        for sign in (1, -1):
            strain = torch.zeros(3, 3, dtype=torch.float64)
            strain[i, j] += sign * h / 2
            strain[j, i] += sign * h / 2
            deform = torch.eye(3, dtype=torch.float64) + strain
            strained = clean.replace(positions=batch.pos @ deform, cell=batch.cell @ deform)
            energies.append(model(strained).energy.sum())
        numeric = (energies[0] - energies[1]) / (2 * h) / volume
        torch.testing.assert_close(stress[i, j], numeric, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(stress, stress.T)
