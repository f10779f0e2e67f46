"""Per-worker shard streams: disjoint ranks, epoch reshuffles, exact resume."""

from __future__ import annotations

import fsspec
from atomforge.training.data import open_source
from atomforge.training.streams import TaskStream


def stream(source, rank=0, world=1, seed=0):
    return TaskStream(fsspec.filesystem("file"), source.files["train"], seed=seed, task_index=0, rank=rank,
                      world=world, chunk_rows=8, shuffle_rows=24)


def ids(s, n):
    out = []
    for _ in range(n):
        out.append(s.peek()["system_id"])
        s.advance()
    return out


def test_ranks_read_disjoint_rows_covering_the_epoch(tiny_shards):
    source = open_source("ani1x", tiny_shards["ani1x"])
    total = source.num_rows("train")
    a, b = stream(source, 0, 2), stream(source, 1, 2)
    rows_a, rows_b = ids(a, a.epoch_rows), ids(b, b.epoch_rows)
    assert not set(rows_a) & set(rows_b)
    assert len(rows_a) + len(rows_b) == total == len(set(rows_a) | set(rows_b))


def test_each_epoch_is_reshuffled_and_seeded(tiny_shards):
    source = open_source("ani1x", tiny_shards["ani1x"])
    s = stream(source)
    epoch0, epoch1 = ids(s, s.epoch_rows), ids(s, s.epoch_rows)
    assert sorted(epoch0) == sorted(epoch1) and epoch0 != epoch1
    assert ids(stream(source), 30) == epoch0[:30]
    assert ids(stream(source, seed=1), 30) != epoch0[:30]


def test_resume_from_state_continues_exactly(tiny_shards):
    source = open_source("ani1x", tiny_shards["ani1x"])
    s = stream(source)
    ids(s, 150)  # past the end of the first epoch
    state = s.state_dict()
    expected = ids(s, 50)
    restored = stream(source)
    restored.load_state_dict(state)
    assert ids(restored, 50) == expected
