"""Elastic world sizes: a step's global batch is the same on any number of ranks, and a checkpoint's loader
state is a position that does not depend on the world, so a run resumed on fewer or more ranks (an elastic
restart) continues with exactly the rows that were next, and with deterministic ops the losses of the
uninterrupted one-rank run."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from atomforge.objectives import CoordinateDenoising, JMPSupervised, MixEntry
from atomforge.recipes.jmp import only_tasks, with_objectives
from atomforge.training.build import build_parts, build_trainer
from atomforge.training.checkpoints import RunDirectory
from atomforge.training.distributed import ThreadGroup, run_ranks
from atomforge.training.lanes import merge_states, owned_lanes, rank_state
from atomforge.training.launch import write_resolved_config

from .faults import FailOnce
from .helpers import tiny_config, train_losses

TASKS = ("oc20", "ani1x")


def config_for(tiny_shards, output, lanes: int = 2, *overrides):
    """`lanes` lanes: the global batch of a run on `lanes` workers, whatever number of in-process ranks trains it.
    Supervised + coordinate denoising: the noise of each micro-batch is seeded by its lane, so it must follow it."""
    config = tiny_config(tiny_shards, output, "val_every=0", f"scaling.num_workers={lanes}", *overrides)
    denoised = with_objectives(config, MixEntry(JMPSupervised()), MixEntry(CoordinateDenoising(), 1.0))
    return only_tasks(denoised, TASKS)


class RecordedLoader:
    """A trainer's loader that records (step, structure ids) of every batch the trainer draws (a test fixture)."""

    def __init__(self, trainer, log: list):
        self.loader, self.trainer, self.log = trainer.parts.train_loader, trainer, log

    def __iter__(self):
        inner = iter(self.loader)
        try:
            for batch in inner:
                self.log.append((self.trainer.step + 1, list(batch.system_id)))  # drawn for the step after those done
                yield batch
        finally:
            inner.close()

    def __getattr__(self, name):
        return getattr(self.loader, name)


def fit_ranks(config, world: int, hooks=(), steps: dict[int, Counter] | None = None) -> dict[int, Counter]:
    """Train `config` on `world` in-process ranks; `steps` (returned, filled also when a rank fails):
    step -> the structure ids of its global batch, as this attempt drew them."""
    write_resolved_config(config)
    group = ThreadGroup(world)
    sink = RunDirectory(config.checkpoint.output, config.checkpoint.num_to_keep)
    trainers = [build_trainer(config, rank, sink, hooks) for rank in group.ranks()]  # one after the other: seeded init
    log: list = []
    for trainer in trainers:
        trainer.parts.train_loader = RecordedLoader(trainer, log)
    steps = {} if steps is None else steps
    try:
        run_ranks(group, lambda rank: trainers[rank.rank].fit())
    finally:
        for step, ids in log:
            steps.setdefault(step, Counter()).update(ids)
    return steps


def interrupted(tiny_shards, output, first: int, then: int) -> dict[int, Counter]:
    """Steps 1-6 on `first` ranks (checkpoint at 4, a rank fails before step 7), then the run resumed on `then`
    ranks: step -> global batch ids, steps 1-4 from the first attempt and 5-8 from the resumed one."""
    fault = FailOnce(step=6, rank=first - 1, output=str(output))
    before: dict[int, Counter] = {}
    with pytest.raises(RuntimeError, match="injected failure at step 6"):
        fit_ranks(config_for(tiny_shards, output), first, [fault], before)
    after = fit_ranks(config_for(tiny_shards, output), then, [fault])  # restores checkpoint_00000004
    assert sorted(after) == [5, 6, 7, 8]
    return {**{s: ids for s, ids in before.items() if s <= 4}, **after}


@pytest.mark.slow
def test_two_ranks_resume_on_one_and_one_on_two_with_the_rows_and_losses_of_one_uninterrupted_rank(tiny_shards,
                                                                                                   tmp_path):
    straight = fit_ranks(config_for(tiny_shards, tmp_path / "straight"), 1)
    expected = train_losses(tmp_path / "straight")
    assert sorted(straight) == list(range(1, 9)) and sorted(expected) == list(range(1, 9))
    for first, then in ((2, 1), (1, 2)):
        output = tmp_path / f"{first}to{then}"
        seen = interrupted(tiny_shards, output, first, then)
        assert seen == straight, (first, then)  # each step's global batch: the same structures, none repeated or skipped
        assert sum(seen.values(), Counter()) == sum(straight.values(), Counter())
        losses = train_losses(output)
        for step in range(1, 9):  # 1-4 trained on `first` ranks, 5-8 on `then`
            assert losses[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-9), (first, then, step)


def step_rows(config, world: int, states=None, steps: int = 4) -> tuple[list[Counter], list[dict]]:
    """`steps` steps of global batch ids drawn by `world` ranks' loaders (from `states`: their loader states)."""
    lanes, accum = config.scaling.lanes, config.optim.grad_accum
    loaders = [build_parts(config, rank, world, torch.device("cpu")).train_loader for rank in range(world)]
    rows = [Counter() for _ in range(steps)]
    for rank, loader in enumerate(loaders):
        if states is not None:
            loader.load_state_dict(states[rank])
        batches = iter(loader)
        for step in range(steps):
            for _ in range(accum * len(owned_lanes(rank, world, lanes))):
                rows[step].update(next(batches).system_id)
        batches.close()
    return rows, [loader.state_dict() for loader in loaders]


@pytest.mark.slow
def test_three_lanes_dealt_to_one_two_or_three_ranks_give_the_same_steps_and_a_world_free_position(tiny_shards,
                                                                                                    tmp_path):
    """Uneven dealing (2 ranks: lanes 0 and 2, lane 1) and accumulation: every world draws each step's rows."""
    config = config_for(tiny_shards, tmp_path / "run", 3, "optim.grad_accum=2")
    reference, _ = step_rows(config, 1, steps=8)
    for world in (2, 3):
        assert step_rows(config, world, steps=8)[0] == reference, world
    # Three ranks stop after 4 steps; their merged state resumes on one rank and on two at step 5.
    first, states = step_rows(config, 3)
    lanes = merge_states(states, 3, lane_batches=4 * 2)
    for world in (1, 2):
        resumed = [rank_state(lanes, owned_lanes(rank, world, 3), 4 * 2) for rank in range(world)]
        assert first + step_rows(config, world, resumed)[0] == reference, world


def test_more_ranks_than_lanes_is_refused(tiny_shards, tmp_path):
    with pytest.raises(ValueError, match="3 ranks for a global batch of 2 lanes"):
        build_parts(config_for(tiny_shards, tmp_path / "run"), 0, 3, torch.device("cpu"))


def test_a_checkpoint_of_another_lane_count_starts_every_stream_after_its_furthest_epoch():
    """Another scaling.num_workers is another global batch: the saved rows cannot continue, none is repeated."""
    from atomforge.training.lanes import next_epoch_state

    saved = [{"batches": 8, "planner": {"streams": {"a": {"epoch": e, "position": 5}, "b": {"epoch": 0, "position": 9}},
                                        "samples_seen": {"a": 3, "b": 4}, "pending": "a", "batches": 8}} for e in (1, 2)]
    state = next_epoch_state(saved, owned=(0, 2), lane_batches=8)
    assert state["batches"] == 16 and set(state["planner"]["lanes"]) == {0, 2}
    for lane in state["planner"]["lanes"].values():
        assert lane["streams"] == {"a": {"epoch": 3, "position": 0}, "b": {"epoch": 1, "position": 0}}
        assert lane["pending"] is None and lane["batches"] == 8
