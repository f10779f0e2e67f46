"""Validation metrics depend on the weights only: identical under every objective mix, every structure counted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from atomforge.batch import collate
from atomforge.models import AtomisticModel
from atomforge.models.painn import PaiNNConfig
from atomforge.objectives import SCD, DeNS, JMPSupervised, NoisyNodes, ObjectiveContext, ObjectiveMix
from atomforge.tasks import TaskSpec
from atomforge.training.validation import merge, validation_metrics, validation_sums

from .conftest import synthetic_structure

TASKS = {"mol": TaskSpec("mol", 5.0, energy_std=2.0, force_std=0.5, force_weight=3.0)}
MIXES = {
    "jmp": [(JMPSupervised(), 1.0)],
    "dens_p0.5": [(DeNS(probability=0.5), 1.0)],
    "dens_p0.9_structure": [(DeNS(probability=0.9, gate="structure"), 1.0)],
    "scd+jmp": [(JMPSupervised(), 1.0), (SCD(), 1.0)],
    "jmp_gated": [(JMPSupervised(), 1.0, 0.5)],
    "noisy_nodes": [(NoisyNodes(sigma=0.05), 1.0)],
}


@pytest.fixture(scope="module")
def batches():
    rng = np.random.default_rng(3)
    structures = [synthetic_structure("mol", i, rng, periodic=False) for i in range(12)]
    return [collate(structures[i:i + 4], cutoff=5.0) for i in range(0, 12, 4)]


def metrics_under(entries, batches, model) -> dict[str, float]:
    mix = ObjectiveMix(entries, model)
    parts = []
    for index, batch in enumerate(batches):
        ctx = ObjectiveContext(torch.Generator().manual_seed(index), TASKS, ["mol"], training=False)
        parts.append(validation_sums(mix, model, batch, ctx, "mol"))
    return validation_metrics(merge(parts))


def test_same_weights_give_identical_validation_errors_under_every_mix(batches):
    torch.manual_seed(0)
    model = AtomisticModel(PaiNNConfig.tiny(), TASKS).eval()
    results = {name: metrics_under(entries, batches, model) for name, entries in MIXES.items()}
    errors = {name: {k: v for k, v in m.items() if k.endswith("_mae")} for name, m in results.items()}
    assert set(errors["jmp"]) == {"val/mol/energy_mae", "val/mol/energy_per_atom_mae", "val/mol/force_mae"}
    for name, value in errors.items():
        assert value == errors["jmp"], name
    # ... and they are the clean model's errors over all 12 structures and every force component.
    with torch.no_grad():
        outs = [model(b, forces="direct") for b in batches]
    energy = torch.cat([(o.energy - b.energy).abs() for o, b in zip(outs, batches)])
    forces = torch.cat([(o.forces - b.forces).abs().reshape(-1) for o, b in zip(outs, batches)])
    assert errors["jmp"]["val/mol/energy_mae"] == pytest.approx(float(energy.mean()), rel=1e-12)
    natoms = torch.cat([b.natoms for b in batches])
    assert errors["jmp"]["val/mol/energy_per_atom_mae"] == pytest.approx(float((energy / natoms).mean()), rel=1e-12)
    assert errors["jmp"]["val/mol/force_mae"] == pytest.approx(float(forces.mean()), rel=1e-6)
    # The mix's own loss is still reported per mix (it is the training loss's quantity).
    assert results["jmp"]["val/mol/loss"] != results["scd+jmp"]["val/mol/loss"]


def test_gradient_mixes_are_validated_with_gradient_forces(batches):
    torch.manual_seed(0)
    model = AtomisticModel(PaiNNConfig.tiny(), TASKS).eval()
    metrics = metrics_under([(JMPSupervised(forces="gradient"), 1.0)], batches[:1], model)
    out = model(batches[0], forces="gradient", create_graph=False)
    expected = (out.forces.detach() - batches[0].forces).abs().mean()
    assert metrics["val/mol/force_mae"] == pytest.approx(float(expected), rel=1e-6)
