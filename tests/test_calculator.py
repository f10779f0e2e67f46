"""ASE calculator: equals the model, forces are -dE/dx, stress for periodic cells, NVE MD conserves energy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from atomforge.batch import collate
from atomforge.calculator import AtomforgeCalculator, structure_of
from atomforge.models import AtomisticModel
from atomforge.models.painn import PaiNNConfig
from atomforge.tasks import TaskSpec

SPEC = TaskSpec("md", cutoff=5.0, max_neighbors=30, energy_mean=0.3, energy_std=2.0, force_std=0.5,
                linear_reference={1: -13.6, 6: -1029.0, 8: -2041.0, 29: -3.5})



@pytest.fixture(scope="module")
def model() -> AtomisticModel:
    torch.manual_seed(0)
    model = AtomisticModel(PaiNNConfig.tiny(), {"other": TaskSpec("other"), "md": SPEC}, vector_heads=())
    with torch.no_grad():  # a less flat random surface than the default init
        for p in model.backbone.parameters():
            p.mul_(1.5)
    return model.double().eval()


def test_calculator_equals_model_and_denormalises(model):
    atoms = molecule("CH3CH2OH")
    atoms.calc = AtomforgeCalculator(model, SPEC, forces="gradient")
    batch = collate([structure_of(atoms)], SPEC.cutoff, SPEC.max_neighbors, tasks=[1])
    batch.pos = torch.as_tensor(atoms.positions)  # float64, as the calculator passes to a float64 model
    out = model(batch, forces="gradient")
    assert atoms.get_potential_energy() == pytest.approx(float(out.energy[0].detach()), abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), out.forces.detach().numpy(), atol=1e-9)
    reference = SPEC.reference_energy(atoms.numbers)
    assert abs(atoms.get_potential_energy() - reference - SPEC.energy_mean) < 50  # de-normalised around Σ ref + μ
    direct = molecule("CH3CH2OH")
    direct.calc = AtomforgeCalculator(model, SPEC, forces="direct")
    np.testing.assert_allclose(direct.get_forces(), model(batch, forces="direct").forces.detach().numpy(), atol=1e-9)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()  # not periodic


def test_gradient_forces_are_finite_differences_of_the_energy(model):
    atoms = molecule("H2O")
    atoms.calc = AtomforgeCalculator(model, SPEC)
    forces = atoms.get_forces()
    numerical = atoms.calc.calculate_numerical_forces(atoms, d=1e-5)
    np.testing.assert_allclose(forces, numerical, atol=1e-5)


def test_periodic_stress_matches_finite_strain(model):
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.rattle(0.05, seed=1)
    # no K truncation here: a K-nearest graph changes under strain where neighbor distances nearly tie
    atoms.calc = AtomforgeCalculator(model, dataclasses.replace(SPEC, max_neighbors=None))
    stress = atoms.get_stress()
    numerical = atoms.calc.calculate_numerical_stress(atoms, d=1e-5)
    np.testing.assert_allclose(stress, numerical, atol=1e-6)
    assert np.abs(stress).max() > 1e-6


def test_nve_md_conserves_energy():
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    # a random-init model with a gentle energy scale, so 50 fs of MD neither collapses nor explodes
    gentle = dataclasses.replace(SPEC, energy_std=0.2)
    torch.manual_seed(1)
    model = AtomisticModel(PaiNNConfig.tiny(), {"md": gentle}, vector_heads=()).double().eval()
    atoms = molecule("CH3OH")
    atoms.calc = AtomforgeCalculator(model, gentle, forces="gradient")
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=0.25 * units.fs)
    totals, kinetic = [], []
    for _ in range(300):
        dyn.run(1)
        totals.append(atoms.get_total_energy())
        kinetic.append(atoms.get_kinetic_energy())
    drift = np.max(np.abs(np.array(totals) - totals[0]))
    exchanged = np.ptp(kinetic)  # kinetic <-> potential exchange over 75 fs
    assert exchanged > 5e-3
    assert drift < 0.01 * exchanged, (drift, exchanged)


def test_pretrained_model_calculator(tmp_path):
    import importlib.util
    from pathlib import Path

    import atomforge
    from atomforge.artifacts.export import export
    from atomforge.artifacts.reference import load_model

    conftest = Path(__file__).parent / "finetune" / "conftest.py"
    spec = importlib.util.spec_from_file_location("finetune_fixtures_calc", conftest)
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    fixtures.pretrain_checkpoint(tmp_path / "run")
    export(load_model(str(tmp_path / "run")), str(tmp_path / "export"))
    model = atomforge.load_pretrained(str(tmp_path / "export"))
    atoms = bulk("Cu", cubic=True)
    atoms.calc = model.calculator(task="oc20")
    assert atoms.calc.forces_mode == "direct" and atoms.calc.spec.max_neighbors == 20
    assert np.isfinite(atoms.get_potential_energy()) and atoms.get_stress().shape == (6,)
    with pytest.raises(ValueError, match="unknown task"):
        model.calculator(task="rmd17")
