"""The trainer without Ray: two ranks in two threads of this process (a fake process group) train as one run.

`ThreadGroup` ranks sum and gather through shared memory, so these tests exercise the trainer's
distributed path (gradient and count all-reduce, gathered loader states, per-rank resume) in
about a second per run, where a real TorchTrainer needs a Ray cluster and worker processes.
"""

from __future__ import annotations

import pytest
import torch
from atomforge.objectives import ObjectiveMix
from atomforge.recipes.jmp import only_tasks
from atomforge.training.build import build_parts, build_trainer
from atomforge.training.checkpoints import RunDirectory
from atomforge.training.distributed import ThreadGroup, run_ranks
from atomforge.training.launch import write_resolved_config

from .faults import FailOnce
from .helpers import tiny_config, train_losses

TASKS = ("oc20", "ani1x")


def config_for(tiny_shards, output, *overrides):
    """The global batch of two workers (two lanes, `training.lanes`): the two in-process ranks stand in for them."""
    return only_tasks(tiny_config(tiny_shards, output, "val_every=0", "scaling.num_workers=2", *overrides), TASKS)


def fit_two_ranks(config, hooks=()):
    """Both ranks' trainers (built one after the other: model init uses torch's global seed), fitted in threads."""
    write_resolved_config(config)
    group = ThreadGroup(2)
    sink = RunDirectory(config.checkpoint.output, config.checkpoint.num_to_keep)
    trainers = [build_trainer(config, rank, sink, hooks) for rank in group.ranks()]
    run_ranks(group, lambda rank: trainers[rank.rank].fit())
    return trainers


def test_two_ranks_keep_identical_weights_and_log_the_global_per_structure_loss(tiny_shards, tmp_path):
    config = config_for(tiny_shards, tmp_path / "run", "max_steps=2", "optim.ema_decay=0")
    trainers = fit_two_ranks(config)
    for (name, a), b in zip(trainers[0].model.state_dict().items(), trainers[1].model.state_dict().values()):
        assert torch.equal(a, b), name
    # Step 1's loss from scratch: each rank's first micro-batch under the initial weights, weighted by size.
    sums, count = 0.0, 0
    for rank in range(2):
        parts = build_parts(config, rank, 2, torch.device("cpu"))
        batch = next(iter(parts.train_loader))
        ctx = trainers[rank].context(0, 0, training=True)
        ctx.step = 0
        loss = ObjectiveMix(list(config.objectives.values()), parts.model).run(parts.model, batch, ctx).loss
        sums, count = sums + float(loss.detach()) * batch.num_graphs, count + batch.num_graphs
    assert train_losses(tmp_path / "run")[1] == pytest.approx(sums / count, rel=1e-6)


def test_two_ranks_resume_after_a_failure_as_if_uninterrupted(tiny_shards, tmp_path):
    fit_two_ranks(config_for(tiny_shards, tmp_path / "straight"))
    expected = train_losses(tmp_path / "straight")
    output = tmp_path / "interrupted"
    fault = FailOnce(step=6, rank=1, output=str(output))
    with pytest.raises(RuntimeError, match="injected failure at step 6 on rank 1"):
        fit_two_ranks(config_for(tiny_shards, output), [fault])
    trainers = fit_two_ranks(config_for(tiny_shards, output), [fault])  # restarts from checkpoint 4
    assert trainers[0].step == trainers[1].step == 8
    resumed = train_losses(output)
    for step in range(5, 9):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-9), step
