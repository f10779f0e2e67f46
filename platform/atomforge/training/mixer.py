"""Task mixing: JMP temperature sampling and the mixer that plans each rank's atom-budget micro-batches.

The task of every structure is drawn with probabilities p_t ∝ (N_t/ΣN)^(1/T) (JMP, T = 2), which
equals JMP's "repeat the small datasets, then shuffle" in expectation and streams. The draws of
micro-batch m of step s on rank r come from a generator seeded by (seed, rank, s, m) alone, and each
task stream's position (and a draw that did not fit the previous batch) is part of the state, so the
data of every step is a function of the seed and the step: an interrupted and resumed run sees
exactly the rows an uninterrupted one does. The mixer is the shard loader's planner
(`atomforge.loader.Planner`): it only orders row references; the loader's builders make the batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DRAWS = 64  # uniforms drawn at once; a micro-batch needing more draws the next block from the same generator


def temperature_probabilities(sizes: Mapping[str, float], temperature: float) -> dict[str, float]:
    """p_t ∝ (N_t / ΣN)^(1/T) for task sizes N_t (rows); T = 1 is proportional, T → ∞ uniform."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not sizes or any(not n > 0 for n in sizes.values()):
        raise ValueError(f"every task needs a positive size, got {dict(sizes)}")
    total = float(sum(sizes.values()))
    raw = {t: (n / total) ** (1.0 / temperature) for t, n in sizes.items()}
    norm = sum(raw.values())
    return {t: v / norm for t, v in raw.items()}


def mixing_probabilities(
    sizes: Mapping[str, float], temperature: float, weights: Mapping[str, float | None] | None = None
) -> dict[str, float]:
    """Temperature probabilities, or explicit weights (normalised) when every task has one."""
    weights = weights or {}
    explicit = [weights.get(t) for t in sizes]
    if all(w is not None for w in explicit) and explicit:
        total = float(sum(explicit))
        return {t: float(w) / total for t, w in zip(sizes, explicit)}
    if any(w is not None for w in explicit):
        raise ValueError("give explicit mixing weights for every task or for none")
    return temperature_probabilities(sizes, temperature)


def step_generator(seed: int, rank: int, step: int, micro: int = 0, stream: int = 0) -> np.random.Generator:
    """The generator of one (rank, step, micro-batch); `stream` separates independent uses."""
    return np.random.default_rng([seed, stream, rank, step, micro])


class _Draws:
    """Task indices drawn with probabilities p, exactly as successive `rng.choice(len(p), p=p)` calls
    (one uniform each, searched in the normalised cumulative sum), a block of uniforms at a time."""

    def __init__(self, rng: np.random.Generator, cdf: np.ndarray):
        self.rng, self.cdf, self.block, self.used = rng, cdf, np.empty(0, dtype=np.int64), 0

    def next(self) -> int:
        if self.used == len(self.block):
            self.block, self.used = self.cdf.searchsorted(self.rng.random(DRAWS), side="right"), 0
        self.used += 1
        return int(self.block[self.used - 1])


class TaskMixer:
    """Plans the micro-batches of one rank from its task streams (the loader's `Planner`).

    Args:
        streams: task name -> stream with `peek()` (atoms of the next row, not consumed), `advance()`
            (consume it, returning its reference), `state_dict()`, `load_state_dict()`.
        probabilities: task name -> p_t (sums to 1); their order is the task index (= stream source).
        max_atoms: atom budget of one micro-batch; a structure over budget alone forms a batch.
        max_structures: optional cap on structures per micro-batch.
        micro_batches: micro-batches per optimizer step (batch i is micro-batch i % m of step i // m).
    """

    def __init__(self, streams: Mapping[str, Any], probabilities: Mapping[str, float], seed: int, rank: int,
                 max_atoms: int, max_structures: int | None = None, micro_batches: int = 1):
        if set(streams) != set(probabilities):
            raise ValueError(f"streams {sorted(streams)} and probabilities {sorted(probabilities)} differ")
        if max_atoms <= 0 or micro_batches <= 0:
            raise ValueError(f"max_atoms and micro_batches must be positive, got {max_atoms}, {micro_batches}")
        self.task_names = tuple(probabilities)
        self.by_task = dict(streams)
        self.streams = [self.by_task[t] for t in self.task_names]
        self.probabilities = np.array([probabilities[t] for t in self.task_names], dtype=np.float64)
        cdf = self.probabilities.cumsum()
        self._cdf = cdf / cdf[-1]
        self.seed, self.rank = seed, rank
        self.max_atoms, self.max_structures, self.micro_batches = max_atoms, max_structures, micro_batches
        self.samples_seen = dict.fromkeys(self.task_names, 0)
        self.pending: str | None = None  # a task drawn that did not fit the previous batch
        self.batches = 0  # micro-batches planned

    def micro_batch(self, step: int, micro: int = 0) -> list[tuple[str, Any]]:
        """[(task name, row reference), ...] for micro-batch `micro` of `step`, within the atom budget."""
        draws = _Draws(step_generator(self.seed, self.rank, step, micro), self._cdf)
        batch: list[tuple[str, Any]] = []
        total = 0
        while self.max_structures is None or len(batch) < self.max_structures:
            task = self.pending or self.task_names[draws.next()]
            self.pending = None
            n = self.by_task[task].peek()
            if batch and total + n > self.max_atoms:
                # The draw carries over to the next batch (dropping it would bias against large structures);
                # the peeked row stays first in its stream.
                self.pending = task
                break
            batch.append((task, self.by_task[task].advance()))
            self.samples_seen[task] += 1
            total += n
            if total >= self.max_atoms:
                break
        return batch

    # ---------------------------------------------------------------- the loader's Planner
    def begin(self) -> None:
        """Task streams are endless: nothing to set up."""

    def next_batch(self) -> list[tuple[int, Any, int]]:
        """The next micro-batch as (task index, window key, position) rows."""
        step, micro = divmod(self.batches, self.micro_batches)
        self.batches += 1
        index = {t: i for i, t in enumerate(self.task_names)}
        return [(index[task], key, position) for task, (key, position) in self.micro_batch(step, micro)]

    def state_dict(self) -> dict:
        return {
            "streams": {t: s.state_dict() for t, s in self.by_task.items()},
            "samples_seen": dict(self.samples_seen),
            "pending": self.pending,
            "batches": self.batches,
        }

    def load_state_dict(self, state: Mapping) -> None:
        for task, stream in self.by_task.items():
            stream.load_state_dict(state["streams"][task])
        self.samples_seen.update(state["samples_seen"])
        self.pending = state["pending"]
        self.batches = int(state.get("batches", 0))


def sample_task_sequence(probabilities: Mapping[str, float], num_draws: int, seed: int) -> Sequence[str]:
    """`num_draws` task names drawn i.i.d. with p_t (used to check mixing statistics)."""
    names = list(probabilities)
    p = np.array([probabilities[t] for t in names])
    idx = np.random.default_rng(seed).choice(len(names), size=num_draws, p=p)
    return [names[i] for i in idx]
