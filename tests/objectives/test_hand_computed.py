"""Each objective's loss equals a hand computation on a 3-atom water (one structure, task 'water')."""

from __future__ import annotations

import torch
from atomforge.models import MASK_Z
from atomforge.objectives import (
    SCD,
    CoordinateDenoising,
    DeNS,
    DerivativeDenoising,
    DerivativeForceField,
    HydrogenMasking,
    JMPSupervised,
    NoisyNodes,
)

S_E, S_F, L_E, L_F = 2.0, 0.5, 1.5, 3.0  # the water TaskSpec in conftest


def run(kit, objective, seed=0):
    batch, model = kit.water_batch(), kit.Recorder(kit.make_model())
    result = objective.run(model, batch, kit.context(seed))
    return batch, model.calls, result


def close(a, b):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_jmp(kit):
    batch, calls, result = run(kit, JMPSupervised())
    out = calls[0][2]
    energy = L_E * abs(float(out.energy[0]) - float(batch.energy[0])) / S_E
    forces = sum(L_F * torch.linalg.norm(out.forces[i] - batch.forces[i]) / S_F for i in range(3)) / 3
    close(result.loss, energy + forces)
    close(result.metrics["energy_mae/water"], abs(float(out.energy[0]) - float(batch.energy[0])))


def test_derivative_force_field(kit):
    batch, calls, result = run(kit, DerivativeForceField(1.0, 500.0, 500.0))
    _, request, out = calls[0]
    assert request["forces"] == "gradient"
    expected = abs(float(out.energy[0] - batch.energy[0])) / 3 + 500 * (out.forces - batch.forces).abs().mean()
    close(result.loss, expected)


def test_dens(kit):
    sigma, lambda_d = 0.1, 7.0
    batch, calls, result = run(kit, DeNS(probability=1.0, ratio=0.5, sigma=sigma, noise_weight=lambda_d), seed=3)
    inputs, _, out = calls[0]
    noise = inputs.positions - batch.pos
    corrupted = noise.abs().sum(-1) > 0
    assert 0 < int(corrupted.sum()) < 3  # the seed gives a mix of corrupted and clean atoms
    u = batch.forces / S_F  # the encoded force: F/s_F, saturated below norm 1
    torch.testing.assert_close(inputs.vector_input, u / torch.sqrt(1 + (u**2).sum(-1, keepdim=True)) * corrupted[:, None])
    energy = L_E * abs(float(out.energy[0] - batch.energy[0])) / S_E
    atoms = [lambda_d * torch.linalg.norm(out.vectors["noise"][i] - noise[i] / sigma) if corrupted[i]
             else L_F * torch.linalg.norm(out.forces[i] / S_F - batch.forces[i] / S_F) for i in range(3)]
    close(result.loss, energy + sum(atoms) / 3)


def test_scd(kit):
    sigma = 0.04
    batch, calls, result = run(kit, SCD(sigma=sigma))
    (_, first_request, first), (second_inputs, _, second) = calls
    assert first_request["embedding"] and second_inputs.condition is first.embedding
    noise = second_inputs.positions - batch.pos
    close(result.loss, ((second.vectors["noise"] - noise / sigma) ** 2).mean())


def test_coordinate_denoising(kit):
    for objective, square in ((CoordinateDenoising.zaidi(), True), (CoordinateDenoising.prediction_head(), False)):
        batch, calls, result = run(kit, objective)
        inputs, _, out = calls[0]
        err = out.vectors["noise"] - (inputs.positions - batch.pos) / objective.sigma
        close(result.loss, (err**2).mean() if square else err.abs().mean())


def test_derivative_denoising_uses_the_physical_sign(kit):
    batch, calls, result = run(kit, DerivativeDenoising(sigma=0.1))
    inputs, _, out = calls[0]
    noise = inputs.positions - batch.pos
    close(result.loss, (out.forces / S_F - (-noise / 0.1)).abs().mean())


def test_noisy_nodes(kit):
    batch, calls, result = run(kit, NoisyNodes(sigma=0.005, weight=0.1))
    inputs, _, out = calls[0]
    noise = inputs.positions - batch.pos
    energy = L_E * abs(float(out.energy[0] - batch.energy[0])) / S_E
    forces = sum(L_F * torch.linalg.norm(out.forces[i] - batch.forces[i]) / S_F for i in range(3)) / 3
    close(result.loss, energy + forces + 0.1 * ((out.vectors["noise"] - noise / 0.005) ** 2).mean())


def test_hydrogen_masking(kit):
    batch, calls, result = run(kit, HydrogenMasking())
    inputs, _, out = calls[0]
    masked = torch.nonzero(inputs.z == MASK_Z).squeeze(1)
    assert masked.numel() == 1 and int(batch.z[masked]) == 1  # one H of the O-H group
    oxygen = int(torch.nonzero(batch.z == 8))
    torch.testing.assert_close(inputs.positions[masked[0]], batch.pos[oxygen])  # position withheld
    target = batch.pos[masked[0]] - batch.pos[oxygen]
    pred = out.vectors["mask"][masked[0]]
    close(result.loss, 1 - torch.dot(pred, target) / (pred.norm() * target.norm()))


def test_derivative_force_field_ignores_fixed_atoms(kit):
    """Fixed atoms (the slab's bottom layer) carry no force loss: changing their labels changes nothing."""
    batch, model = kit.mixed_batch(), kit.make_model()
    fixed = batch.fixed.bool()
    assert 0 < int(fixed.sum()) < batch.num_nodes
    objective = DerivativeForceField(1.0, 500.0, 0.0)
    loss = objective.run(model, batch, kit.context()).loss
    batch.forces[fixed] += 100.0
    torch.testing.assert_close(objective.run(model, batch, kit.context()).loss, loss)
