"""Objective behaviour: DeNS respects fixed atoms and MD frames, SCD trains its first pass, seeds
reproduce losses, and every objective's loss falls over a few optimisation steps."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from atomforge.objectives import (
    SCD,
    CoordinateDenoising,
    DeNS,
    DerivativeDenoising,
    DerivativeForceField,
    HydrogenMasking,
    JMPSupervised,
    LinearSchedule,
    NoisyNodes,
    ObjectiveContext,
    ObjectiveMix,
)


def all_objectives():
    return [JMPSupervised(), JMPSupervised(forces="gradient"), DerivativeForceField(),
            DeNS(probability=1.0, gate="structure", noise_weight={"water": 5.0, "metal": 10.0}, decay=True),
            DeNS(probability=1.0, multiscale=(0.01, 0.5, 50)), DeNS(probability=1.0, forces="gradient"),
            SCD(), CoordinateDenoising.zaidi(), CoordinateDenoising.prediction_head(), DerivativeDenoising(),
            NoisyNodes(), HydrogenMasking()]


def test_dens_never_moves_fixed_atoms_nor_md_frames(kit):
    batch, model = kit.mixed_batch(), kit.Recorder(kit.make_model())
    md = batch.is_md[batch.batch]
    for seed in range(5):
        DeNS(probability=1.0, gate="structure", ratio=1.0).run(model, batch, kit.context(seed))
        inputs, _, _ = model.calls[-1]
        moved = (inputs.positions - batch.pos).abs().sum(-1) > 0
        assert not moved[batch.fixed].any() and not moved[md].any()
        assert moved[~batch.fixed & ~md].all()  # ratio 1: every other free atom is corrupted
        assert not inputs.vector_input[~moved].any()


def test_dens_corrupts_md_frames_where_the_task_allows_it(kit):
    """The MD-frame rule is per dataset: the MD17 code corrupts MD frames (rMD17 is all MD frames)."""
    batch, model = kit.mixed_batch(), kit.Recorder(kit.make_model())
    md = batch.is_md[batch.batch]
    tasks = {**kit.TASKS, "water": dataclasses.replace(kit.TASKS["water"], dens_md_frames=True)}
    ctx = ObjectiveContext(torch.Generator().manual_seed(0), tasks, list(tasks))
    DeNS(probability=1.0, gate="structure", ratio=1.0).run(model, batch, ctx)
    moved = (model.calls[-1][0].positions - batch.pos).abs().sum(-1) > 0
    assert md.any() and moved[md & ~batch.fixed].all() and not moved[batch.fixed].any()


@pytest.mark.parametrize("forces", ["direct", "gradient"])
def test_dens_force_variants_use_the_noise_head_on_corrupted_atoms(kit, forces):
    batch, model = kit.water_batch(), kit.Recorder(kit.make_model())
    result = DeNS(probability=1.0, ratio=0.5, forces=forces).run(model, batch, kit.context(3))
    _, request, out = model.calls[-1]
    assert request["forces"] == forces and out.forces_mode == forces and "noise" in out.vectors
    assert torch.isfinite(result.loss) and result.metrics["noise_l2mae"] > 0


def test_scd_gradient_reaches_the_first_pass(kit):
    model = kit.make_model()
    with torch.no_grad():  # adaLN modulation starts at zero (identity blocks); as after a few steps:
        for name, p in model.named_parameters():
            if "modulation" in name:
                p.normal_(std=0.1)
    SCD(condition_dropout=0.0).run(model, kit.mixed_batch(), kit.context()).loss.backward()
    first_pass_only = list(model.embedding_head.parameters())  # used only to embed the near-clean view
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in first_pass_only)
    assert model.backbone.embedding.weight.grad is None  # atom embeddings frozen during SCD


@pytest.mark.parametrize("objective", all_objectives(), ids=lambda o: o.name)
def test_same_seed_gives_the_same_loss(kit, objective):
    batch, model = kit.mixed_batch(), kit.make_model()
    a = objective.run(model, batch, kit.context(7)).loss
    b = objective.run(model, batch, kit.context(7)).loss
    assert torch.equal(a.detach(), b.detach())


@pytest.mark.parametrize("kind", ["painn", "e3nn"])
def test_every_objective_loss_decreases(kit, kind):
    batch = kit.mixed_batch()
    for objective in all_objectives() if kind == "painn" else [DeNS(probability=1.0), SCD(), HydrogenMasking()]:
        model = kit.make_model(kind)
        mix = ObjectiveMix([(objective, 1.0)], model)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses = []
        for _ in range(8):  # same seed every step: the same corruption, so the loss must fall
            result = mix.run(model, batch, kit.context(seed=1))
            optimizer.zero_grad()
            result.loss.backward()
            optimizer.step()
            losses.append(float(result.loss.detach()))
        assert losses[-1] < losses[0], f"{objective.name}: {losses}"


def test_mix_weights_gates_and_schedules(kit):
    model, batch = kit.make_model(), kit.mixed_batch()
    with pytest.raises(ValueError, match="forces count once"):
        ObjectiveMix([(JMPSupervised(), 1.0), (DeNS(), 1.0)], model)
    mix = ObjectiveMix([(JMPSupervised(), 1.0), (SCD(), LinearSchedule(2.0, 0.0)), (HydrogenMasking(), 1.0, 0.0)], model)
    result = mix.run(model, batch, kit.context(step=5, total_steps=10))
    assert result.metrics["scd/weight"] == pytest.approx(1.0)
    assert "hmask/weight" not in result.metrics  # gated off (probability 0)
    expected = result.metrics["jmp/energy_loss"] + result.metrics["jmp/force_loss"] + result.metrics["scd/noise_mse"]
    assert result.metrics["loss"] == pytest.approx(expected, rel=1e-5)
