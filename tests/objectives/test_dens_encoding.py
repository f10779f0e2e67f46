"""DeNS's force encoding: independent of the force unit, and bounded, so a DeNS batch trains as stably as a
supervised one whatever the forces' size (raw OC20 / ANI-1x forces blew a JMP+DeNS pretraining up to loss 1e8)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from atomforge.models import AtomisticModel
from atomforge.models.equivariant import EquivariantConfig
from atomforge.models.gemnet_oc.model import GemNetOCConfig
from atomforge.models.painn import PaiNNConfig
from atomforge.objectives import DeNS, JMPSupervised, ObjectiveContext

BACKBONES = {"painn": PaiNNConfig(hidden=64, num_layers=3, num_basis=16, cutoff=5.0, condition_dim=8),
             "equivariant": EquivariantConfig.tiny(), "gemnet_oc": dataclasses.replace(GemNetOCConfig.tiny(), cutoff=5.0)}


def scaled(batch, factor: float):
    batch = batch.clone()
    batch.forces = batch.forces * factor
    return batch


def with_force_std(tasks, factor: float):
    return {name: dataclasses.replace(spec, force_std=spec.force_std * factor) for name, spec in tasks.items()}


def grad_norm(model, objective, batch, tasks, seed: int = 0) -> tuple[float, float]:
    model.zero_grad()
    ctx = ObjectiveContext(torch.Generator().manual_seed(seed), tasks, list(tasks), training=True)
    loss = objective.run(model, batch, ctx).loss
    loss.backward()
    norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters() if p.grad is not None))
    return float(loss.detach()), float(norm)


def test_dens_does_not_depend_on_the_force_unit(kit):
    """Forces and the tasks' s_F in kcal/mol/Å instead of eV/Å: the same encoding, the same loss."""
    batch, tasks, kcal = kit.mixed_batch(), kit.TASKS, 23.0605
    model = kit.Recorder(kit.make_model())
    dens = DeNS(probability=1.0, gate="structure", ratio=0.5)
    ev = dens.run(model, batch, ObjectiveContext(torch.Generator().manual_seed(1), tasks, list(tasks)))
    other = with_force_std(tasks, kcal)
    km = dens.run(model, scaled(batch, kcal), ObjectiveContext(torch.Generator().manual_seed(1), other, list(other)))
    (first, _, _), (second, _, _) = model.calls
    assert first.vector_input.abs().sum() > 0
    torch.testing.assert_close(second.vector_input, first.vector_input, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(km.loss, ev.loss, rtol=1e-4, atol=1e-5)  # float32 forces


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_dens_gradient_stays_near_the_supervised_one_for_large_forces(kit, kind):
    """Forces 20x their task's s_F (EMT's own are ~1 s_F): DeNS's loss and gradient stay within a small
    factor of JMP's on the same batch and weights."""
    torch.manual_seed(0)
    model, batch = AtomisticModel(BACKBONES[kind], tasks=kit.TASKS), scaled(kit.mixed_batch(), 20.0)
    jmp_loss, jmp_norm = grad_norm(model, JMPSupervised(), batch, kit.TASKS)
    for seed in range(3):
        dens_loss, dens_norm = grad_norm(model, DeNS(probability=1.0, gate="structure", ratio=0.5), batch, kit.TASKS, seed)
        assert dens_loss < 3 * jmp_loss and dens_norm < 5 * jmp_norm, (dens_loss, jmp_loss, dens_norm, jmp_norm)
