"""Task mixing: JMP temperature sampling and the per-worker mixer that builds atom-budget batches.

The task of every structure is drawn with probabilities p_t ∝ (N_t/ΣN)^(1/T) (JMP, T = 2), which
equals JMP's "repeat the small datasets, then shuffle" in expectation and streams. The draws of
micro-batch m of step s on rank r come from a generator seeded by (seed, rank, s, m) alone, and
each task stream's position (and a draw that did not fit the previous batch) is part of the checkpoint, so the data of every step is a function of
the seed and the step: an interrupted and resumed run sees exactly the rows an uninterrupted one does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


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


class TaskMixer:
    """Builds the micro-batches of one worker from its task streams.

    Args:
        streams: task name -> stream with `peek()` (next row, not consumed), `advance()`,
            `state_dict()`, `load_state_dict()`; rows carry `num_atoms`.
        probabilities: task name -> p_t (sums to 1).
        max_atoms: atom budget of one micro-batch; a structure over budget alone forms a batch.
        max_structures: optional cap on structures per micro-batch.
    """

    def __init__(self, streams: Mapping[str, Any], probabilities: Mapping[str, float], seed: int, rank: int,
                 max_atoms: int, max_structures: int | None = None):
        if set(streams) != set(probabilities):
            raise ValueError(f"streams {sorted(streams)} and probabilities {sorted(probabilities)} differ")
        self.streams = dict(streams)
        self.task_names = tuple(probabilities)
        self.probabilities = np.array([probabilities[t] for t in self.task_names], dtype=np.float64)
        self.seed, self.rank = seed, rank
        self.max_atoms, self.max_structures = max_atoms, max_structures
        self.samples_seen = dict.fromkeys(self.task_names, 0)
        self.pending: str | None = None  # a task drawn that did not fit the previous batch

    def micro_batch(self, step: int, micro: int = 0) -> list[tuple[str, dict]]:
        """[(task name, row), ...] for micro-batch `micro` of `step`, within the atom budget."""
        rng = step_generator(self.seed, self.rank, step, micro)
        batch: list[tuple[str, dict]] = []
        total = 0
        while self.max_structures is None or len(batch) < self.max_structures:
            task = self.pending or self.task_names[int(rng.choice(len(self.task_names), p=self.probabilities))]
            self.pending = None
            row = self.streams[task].peek()
            n = int(row["num_atoms"])
            if batch and total + n > self.max_atoms:
                # The draw carries over to the next batch (dropping it would bias against large structures);
                # the peeked row stays first in its stream.
                self.pending = task
                break
            self.streams[task].advance()
            batch.append((task, row))
            self.samples_seen[task] += 1
            total += n
            if total >= self.max_atoms:
                break
        return batch

    def state_dict(self) -> dict:
        return {
            "streams": {t: s.state_dict() for t, s in self.streams.items()},
            "samples_seen": dict(self.samples_seen),
            "pending": self.pending,
        }

    def load_state_dict(self, state: Mapping) -> None:
        for task, stream in self.streams.items():
            stream.load_state_dict(state["streams"][task])
        self.samples_seen.update(state["samples_seen"])
        self.pending = state["pending"]


def sample_task_sequence(probabilities: Mapping[str, float], num_draws: int, seed: int) -> Sequence[str]:
    """`num_draws` task names drawn i.i.d. with p_t (used to check mixing statistics)."""
    names = list(probabilities)
    p = np.array([probabilities[t] for t in names])
    idx = np.random.default_rng(seed).choice(len(names), size=num_draws, p=p)
    return [names[i] for i in idx]
