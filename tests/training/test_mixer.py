"""Temperature sampling and the per-worker mixer: probabilities, sampled shares, budgets, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from atomforge.training.mixer import (
    TaskMixer,
    mixing_probabilities,
    sample_task_sequence,
    temperature_probabilities,
)


def test_temperature_probabilities_match_jmp_formula():
    sizes = {"oc20": 100_000, "oc22": 8_000, "ani1x": 40_000, "transition1x": 10_000}
    p = temperature_probabilities(sizes, 2.0)
    total = sum(sizes.values())
    raw = {t: (n / total) ** 0.5 for t, n in sizes.items()}
    assert p == pytest.approx({t: v / sum(raw.values()) for t, v in raw.items()})
    assert temperature_probabilities(sizes, 1.0) == pytest.approx({t: n / total for t, n in sizes.items()})
    flat = temperature_probabilities(sizes, 1e6)
    assert max(flat.values()) - min(flat.values()) < 1e-4  # T -> inf: uniform
    assert p["oc22"] > sizes["oc22"] / total  # T = 2 upsamples the small corpora


def test_explicit_weights_and_bad_inputs():
    assert mixing_probabilities({"a": 1, "b": 3}, 2.0, {"a": 1.0, "b": 1.0}) == {"a": 0.5, "b": 0.5}
    with pytest.raises(ValueError, match="every task or for none"):
        mixing_probabilities({"a": 1, "b": 3}, 2.0, {"a": 1.0, "b": None})
    with pytest.raises(ValueError, match="temperature"):
        temperature_probabilities({"a": 1}, 0.0)


def test_sampled_shares_match_probabilities_within_tolerance():
    p = temperature_probabilities({"oc20": 1000, "oc22": 80, "ani1x": 400, "transition1x": 100}, 2.0)
    n = 20_000
    draws = sample_task_sequence(p, n, seed=7)
    for task, prob in p.items():
        share = draws.count(task) / n
        sigma = np.sqrt(prob * (1 - prob) / n)
        assert abs(share - prob) < 4 * sigma, (task, share, prob)


class ListStream:
    """A stream over fixed atom counts with the RowStream interface; references are (name, index)."""

    def __init__(self, name, sizes):
        self.name, self.sizes = name, list(sizes)
        self.position = 0

    def peek(self):
        return self.sizes[self.position % len(self.sizes)]

    def advance(self):
        self.position += 1
        return self.name, self.position - 1

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def make_mixer(seed=0, rank=0, **options):
    streams = {"a": ListStream("a", [5, 7, 3] * 50), "b": ListStream("b", [40, 2] * 50)}
    return TaskMixer(streams, {"a": 0.7, "b": 0.3}, seed=seed, rank=rank, max_atoms=50, **options)


def reference_micro_batch(streams, probabilities, seed, rank, step, micro, max_atoms, pending):
    """The mixer's specification, written plainly: one rng.choice per structure, the draw that does not fit
    carried over. Returns (batch, pending)."""
    rng = np.random.default_rng([seed, 0, rank, step, micro])
    names, p = list(probabilities), np.array(list(probabilities.values()))
    batch, total = [], 0
    while True:
        task = pending or names[int(rng.choice(len(names), p=p))]
        pending = None
        n = streams[task].peek()
        if batch and total + n > max_atoms:
            return batch, task
        batch.append((task, streams[task].advance()))
        total += n
        if total >= max_atoms:
            return batch, None


def test_mixer_draws_equal_the_plain_specification():
    mixer = make_mixer(seed=3, micro_batches=2)
    reference = {"a": ListStream("a", [5, 7, 3] * 50), "b": ListStream("b", [40, 2] * 50)}
    pending = None
    for index in range(200):
        step, micro = divmod(index, 2)
        expected, pending = reference_micro_batch(reference, {"a": 0.7, "b": 0.3}, 3, 0, step, micro, 50, pending)
        assert mixer.next_batch() == [(["a", "b"].index(t), name, i) for t, (name, i) in expected]


def test_mixer_batches_respect_the_atom_budget_and_shares():
    mixer = make_mixer()
    counts = {"a": 0, "b": 0}
    for step in range(300):
        batch = mixer.micro_batch(step)
        atoms = sum(mixer.by_task[task].sizes[i % len(mixer.by_task[task].sizes)] for task, (_, i) in batch)
        assert atoms <= 50 or len(batch) == 1
        for task, _ in batch:
            counts[task] += 1
    assert counts == mixer.samples_seen
    share_a = counts["a"] / sum(counts.values())
    assert abs(share_a - 0.7) < 0.05


def test_mixer_is_a_function_of_seed_step_and_stream_positions():
    first, second = make_mixer(), make_mixer()
    for step in range(5):
        first.micro_batch(step)
    state = first.state_dict()
    expected = [first.micro_batch(step) for step in range(5, 10)]
    second.load_state_dict(state)
    assert [second.micro_batch(step) for step in range(5, 10)] == expected
    other_rank = make_mixer(rank=1)
    other_rank.load_state_dict(state)
    assert [other_rank.micro_batch(step) for step in range(5, 10)] != expected
