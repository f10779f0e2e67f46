"""The optimiser: no weight decay on embeddings and 1-D parameters; SCD's frozen embedding is never updated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from atomforge.batch import collate
from atomforge.models import AtomisticModel
from atomforge.models.painn import PaiNNConfig
from atomforge.objectives import SCD, JMPSupervised, ObjectiveContext, ObjectiveMix
from atomforge.schema import Structure
from atomforge.tasks import TaskSpec
from atomforge.training.config import LayerLR, OptimConfig
from atomforge.training.optim import build_optimizer, param_groups

from .conftest import synthetic_structure

TASKS = {"mol": TaskSpec("mol", 5.0)}
OPTIM = OptimConfig(lr=1e-3, weight_decay=0.1)


def model_and_batch():
    torch.manual_seed(0)
    model = AtomisticModel(PaiNNConfig.tiny(), TASKS)
    rng = np.random.default_rng(0)
    return model, collate([synthetic_structure("mol", i, rng, periodic=False) for i in range(4)], cutoff=5.0)


def decay_of(optimizer) -> dict[int, float]:
    return {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}


def test_embeddings_and_one_dimensional_parameters_get_no_weight_decay():
    model, _ = model_and_batch()
    decay = decay_of(build_optimizer(model, OPTIM))
    names = {id(p): n for n, p in model.named_parameters()}
    for p in model.parameters():
        expected = 0.0 if p.ndim < 2 or names[id(p)] == "backbone.embedding.weight" else 0.1
        assert decay[id(p)] == expected, names[id(p)]
    assert decay[id(model.null_condition)] == 0.0 and decay[id(model.backbone.embedding.weight)] == 0.0
    for group in param_groups(model, OptimConfig(weight_decay=0.1, layer_lr=LayerLR())):  # fine-tuning's groups too
        if "backbone.embedding.weight" in group["names"]:
            assert group["weight_decay"] == 0.0


def steps(model, mix, optimizer, batch, num_steps: int) -> None:
    for step in range(num_steps):
        optimizer.zero_grad(set_to_none=True)
        ctx = ObjectiveContext(torch.Generator().manual_seed(step), TASKS, ["mol"], step=step, total_steps=num_steps)
        mix.run(model, batch, ctx).loss.backward()
        optimizer.step()


def test_scd_frozen_embedding_gets_no_update_in_20_steps():
    """SCD detaches the table, so its gradient is zero: weight decay was its only update
    (a factor (1 - lr·wd)^20 after 20 steps); with no decay on embeddings it stays put."""
    model, batch = model_and_batch()
    before = model.backbone.embedding.weight.detach().clone()
    steps(model, ObjectiveMix([(SCD(), 1.0)], model), build_optimizer(model, OPTIM), batch, 20)
    factor = float(model.backbone.embedding.weight.norm() / before.norm())
    assert torch.equal(model.backbone.embedding.weight, before), f"embedding scaled by {factor}"


def test_frozen_means_no_update_even_with_momentum_from_earlier_steps():
    """A run that trained the embedding (JMP) and continues with SCD alone: AdamW's momentum would
    keep moving a zero-gradient table; frozen parameters are left out of the optimizer instead."""
    model, batch = model_and_batch()
    optimizer = build_optimizer(model, OPTIM)
    steps(model, ObjectiveMix([(JMPSupervised(), 1.0)], model), optimizer, batch, 2)
    scd = ObjectiveMix([(SCD(), 1.0)], model)
    frozen = scd.frozen_parameters(model)
    assert [id(p) for p in frozen] == [id(model.backbone.embedding.weight)]
    state = optimizer.state_dict()
    optimizer = build_optimizer(model, OPTIM, frozen)
    before = model.backbone.embedding.weight.detach().clone()
    steps(model, scd, optimizer, batch, 3)
    assert torch.equal(model.backbone.embedding.weight, before)
    assert state["state"]  # the JMP steps did build momentum


def test_scd_with_a_supervised_objective_trains_the_embedding():
    model, _ = model_and_batch()
    assert ObjectiveMix([(JMPSupervised(), 1.0), (SCD(), 1.0)], model).frozen_parameters(model) == []


@pytest.mark.parametrize("num_atoms", [3, 30, 300])
def test_scd_condition_scale_does_not_grow_with_atom_count(num_atoms):
    """The pooled graph embedding is normalised after pooling: its norm stays within a factor 2 of
    the 3-atom value for 30 and 300 atoms (a plain sum grows ~linearly with the atom count)."""
    torch.manual_seed(0)
    model = AtomisticModel(PaiNNConfig.tiny(), TASKS).eval()
    norms = {}
    for n in (3, num_atoms):
        rng = np.random.default_rng(n)
        side = int(np.ceil(n ** (1 / 3)))
        grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
        pos = 2.3 * grid + rng.normal(scale=0.2, size=(n, 3))  # a jittered lattice, ~12 Å³ per atom
        structure = Structure(f"cluster{n}", rng.choice([1, 6, 8], size=n), pos, None, np.zeros(3, bool))
        with torch.no_grad():
            norms[n] = float(model(collate([structure], cutoff=5.0), energy=False, embedding=True).embedding.norm())
    assert 0.5 < norms[num_atoms] / norms[3] < 2.0, norms
