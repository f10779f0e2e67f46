"""The model contract: JSON config round trip, capabilities, routing by task, DDP-safe unused heads."""

from __future__ import annotations

import json

import pytest
import torch
from atomforge.datasets import task_spec
from atomforge.models import AtomisticModel, Capability
from atomforge.models.painn import PaiNNConfig
from atomforge.objectives import SCD, JMPSupervised, ObjectiveContext, ObjectiveMix


def test_config_dict_round_trip_gives_identical_outputs(kit, backbone_kind):
    model = kit.make_model(backbone_kind)
    config = json.loads(json.dumps(model.config_dict()))
    clone = AtomisticModel.from_config_dict(config)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    batch = kit.make_batch([kit.labelled(kit.slab(), "s"), kit.labelled(kit.ethanol(), "m")], tasks=[0, 1])
    a, b = model(batch, forces="direct"), clone(batch, forces="direct")
    torch.testing.assert_close(a.energy, b.energy)
    torch.testing.assert_close(a.forces, b.forces)


def test_outputs_are_routed_by_task(kit):
    model = kit.make_model("painn")
    batch = kit.make_batch([kit.labelled(kit.ethanol(), "m")], tasks=[1])
    before = model(batch, forces="direct")
    with torch.no_grad():  # changing the other task's heads must not change this structure's outputs
        for p in [*model.energy_heads["oc20"].parameters(), *model.force_heads["oc20"].parameters()]:
            p.add_(1.0)
    after = model(batch, forces="direct")
    torch.testing.assert_close(before.energy, after.energy)
    torch.testing.assert_close(before.forces, after.forces)


def test_capabilities_are_checked_when_the_mix_is_built():
    model = AtomisticModel(PaiNNConfig(hidden=8, num_layers=1, num_basis=4, condition_dim=0), tasks=("oc20",))
    assert Capability.GRAPH_CONDITION not in model.capabilities
    with pytest.raises(ValueError, match="scd requires capabilities \\['graph_condition'\\]"):
        ObjectiveMix([(SCD(), 1.0)], model)
    with pytest.raises(ValueError, match="vector heads"):
        ObjectiveMix([(SCD(), 1.0)], AtomisticModel(PaiNNConfig.tiny(), ("oc20",), vector_heads=()))


def test_every_parameter_gets_a_gradient_when_heads_are_unused(kit):
    model = kit.make_model("painn")
    model.train()
    batch = kit.make_batch([kit.labelled(kit.ethanol(), "m")], tasks=[1])  # oc20 heads, noise, mask unused
    ctx = ObjectiveContext(torch.Generator().manual_seed(0), {t: task_spec(t) for t in model.tasks}, model.tasks)
    ObjectiveMix([(JMPSupervised(), 1.0)], model).run(model, batch, ctx).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing
