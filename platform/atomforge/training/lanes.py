"""The global batch's lanes: every step's data split the same way whatever the number of ranks.

A step's global batch is `lanes × micro_batches` micro-batches (`scaling.lanes`, `optim.grad_accum`).
Lane l is what rank l of a full-size run reads: its own row stream per task (rank l of world
`lanes`: every lanes-th chunk of each epoch), its own task mixer seeded by (seed, l, step, micro)
and its own objective noise. A run on `world` ranks deals the lanes out, rank r taking lanes r,
r + world, ... (`owned_lanes`); a rank runs its lanes' micro-batches one after the other and the
gradient all-reduce sums them, so the rows, the loss and the gradient of every step are those of
the full-size run: a smaller world accumulates more micro-batches per rank (an elastic run that
lost a node keeps its batch size and learning-rate schedule). A checkpoint holds every lane's
loader state (`merge_states`), a position that does not depend on the world, so a run resumed on
any number of ranks continues each lane with exactly the rows that were next (`rank_state`).

One rank's lanes are one loader `Planner` (`LanePlanner`): each lane's planner over its own
streams, whose stream slots follow on from the previous lane's (`atomforge.streams.RowStream.slot`),
so the loader keeps their windows apart and decodes only the chunks of this rank's lanes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def owned_lanes(rank: int, world: int, lanes: int) -> tuple[int, ...]:
    """The lanes rank `rank` of `world` runs: rank, rank + world, ... below `lanes` (ValueError when world > lanes)."""
    if not 1 <= world <= lanes:
        raise ValueError(f"{world} ranks for a global batch of {lanes} lanes (scaling.num_workers): a run may have "
                         f"1 to {lanes} ranks; raise scaling.num_workers to train on more")
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got {rank}")
    return tuple(range(rank, lanes, world))


class LanePlanner:
    """One rank's lanes as one loader planner: step by step, each lane's `micro_batches` batches in lane order.

    planners: lane -> that lane's planner (`training.mixer.TaskMixer`, or an `AtomBudgetPlanner`
    for epoch batching) over streams whose `slot`s continue from one lane to the next, in the
    order of `planners`. Batch i is micro-batch i % micro_batches of lane (i // micro_batches) %
    len(planners) of this rank's step i // (micro_batches · len(planners)).
    """

    def __init__(self, planners: Mapping[int, Any], micro_batches: int):
        if not planners or micro_batches < 1:
            raise ValueError(f"LanePlanner needs lanes and micro_batches >= 1, got {list(planners)}, {micro_batches}")
        self.lanes = tuple(planners)
        self.planners = [planners[lane] for lane in self.lanes]
        self.micro_batches = micro_batches
        self.streams = [stream for planner in self.planners for stream in planner.streams]
        self._offsets = np.cumsum([0] + [len(p.streams) for p in self.planners]).tolist()
        for slot, stream in enumerate(self.streams):
            if stream.slot != slot:
                raise ValueError(f"stream {slot} of lanes {self.lanes} has slot {stream.slot}: give each lane's "
                                 "streams consecutive slots")
        self.batches = 0  # batches planned on this rank

    def begin(self) -> None:
        for planner in self.planners:
            planner.begin()

    def next_batch(self) -> list[tuple[int, Any, int]] | None:
        """The next micro-batch's rows as (stream slot, window key, position), or None when a lane's plan ended."""
        index = (self.batches // self.micro_batches) % len(self.planners)
        rows = self.planners[index].next_batch()
        if rows is None:
            return None
        self.batches += 1
        offset = self._offsets[index]
        return [(offset + source, key, position) for source, key, position in rows]

    def state_dict(self) -> dict:
        return {"lanes": {lane: p.state_dict() for lane, p in zip(self.lanes, self.planners)}, "batches": self.batches}

    def load_state_dict(self, state: Mapping) -> None:
        for lane, planner in zip(self.lanes, self.planners):
            planner.load_state_dict(state["lanes"][lane])
        self.batches = int(state["batches"])


def merge_states(rank_states: Sequence[Mapping], lanes: int, lane_batches: int) -> list[dict]:
    """Every lane's loader state, in lane order, from every rank's `ShardLoader.state_dict()` (gathered).

    lane_batches: micro-batches each lane has handed out (steps · micro_batches). Each entry is
    {"batches", "planner"}: what a loader reading that lane alone would hold (a full-size run's rank).
    """
    merged: list[dict | None] = [None] * lanes
    for state in rank_states:
        for lane, planner in state["planner"]["lanes"].items():
            merged[int(lane)] = {"batches": lane_batches, "planner": planner}
    missing = [lane for lane, state in enumerate(merged) if state is None]
    if missing:
        raise ValueError(f"no rank holds lanes {missing} of {lanes}")
    return merged


def rank_state(lane_states: Sequence[Mapping], owned: Sequence[int], lane_batches: int) -> dict:
    """The `ShardLoader` state of a rank running lanes `owned`, from every lane's state (`merge_states`)."""
    batches = lane_batches * len(owned)
    return {"batches": batches,
            "planner": {"lanes": {lane: lane_states[lane]["planner"] for lane in owned}, "batches": batches}}


def next_epoch_state(lane_states: Sequence[Mapping], owned: Sequence[int], lane_batches: int) -> dict:
    """A rank state for a checkpoint of another lane count (the global batch changed): the saved rows
    cannot continue, so every stream of every lane starts the epoch after the furthest saved one."""
    planners = [state["planner"] for state in lane_states]
    streams = [p["streams"] if "streams" in p else {"0": p["stream"]} for p in planners]
    epoch = {task: 1 + max(int(s[task]["epoch"]) for s in streams) for task in streams[0]}
    fresh = {task: {"epoch": e, "position": 0} for task, e in epoch.items()}
    lanes = {}
    for lane in owned:
        if "streams" in planners[0]:
            lanes[lane] = {"streams": dict(fresh), "samples_seen": dict.fromkeys(fresh, 0), "pending": None,
                           "batches": lane_batches}
        else:
            lanes[lane] = {"stream": next(iter(fresh.values()))}
    batches = lane_batches * len(owned)
    return {"batches": batches, "planner": {"lanes": lanes, "batches": batches}}


def samples_seen(planner_state: Mapping) -> dict[str, int]:
    """Structures drawn per task over a rank's lanes (task mixers count them; epoch batching does not)."""
    seen: dict[str, int] = {}
    for lane in planner_state["lanes"].values():
        for task, count in lane.get("samples_seen", {}).items():
            seen[task] = seen.get(task, 0) + int(count)
    return seen
