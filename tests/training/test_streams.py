"""Row streams over a task's shards: disjoint ranks, epoch reshuffles, exact resume, validation subsets."""

from __future__ import annotations

import numpy as np
from atomforge.streams import RowStream
from atomforge.training.data import open_source


def stream(source, rank=0, world=1, seed=0, **options):
    files = source.files["train"]
    return RowStream(files, lambda window: np.ones(window.num_rows, dtype=np.int64), seed=seed, rank=rank,
                     world=world, chunk_rows=8, shuffle_rows=24, **options)


def rows(s, n):
    """The next n rows as (file, row in file): what a stream's references point at."""
    out = []
    for _ in range(n):
        s.peek()
        key, position = s.advance()
        window = s.window(key)
        concat = int(window.order()[position])
        starts = np.cumsum([0] + [c.num_rows for c in window.chunks])
        chunk = window.chunks[int(np.searchsorted(starts, concat, side="right") - 1)]
        out.append((chunk.file, chunk.start + concat - int(starts[window.chunks.index(chunk)])))
    return out


def test_ranks_read_disjoint_rows_covering_the_epoch(tiny_shards):
    source = open_source("ani1x", tiny_shards["ani1x"])
    total = source.num_rows("train")
    a, b = stream(source, 0, 2), stream(source, 1, 2)
    rows_a, rows_b = rows(a, a.epoch_rows), rows(b, b.epoch_rows)
    assert not set(rows_a) & set(rows_b)
    assert len(rows_a) + len(rows_b) == total == len(set(rows_a) | set(rows_b))


def test_each_epoch_is_reshuffled_and_seeded(tiny_shards):
    source = open_source("ani1x", tiny_shards["ani1x"])
    s = stream(source)
    epoch0, epoch1 = rows(s, s.epoch_rows), rows(s, s.epoch_rows)
    assert sorted(epoch0) == sorted(epoch1) and epoch0 != epoch1
    assert rows(stream(source), 30) == epoch0[:30]
    assert rows(stream(source, seed=1), 30) != epoch0[:30]


def test_resume_from_state_continues_exactly(tiny_shards):
    source = open_source("ani1x", tiny_shards["ani1x"])
    s = stream(source)
    rows(s, 150)  # past the end of the first epoch
    state = s.state_dict()
    expected = rows(s, 50)
    restored = stream(source)
    restored.load_state_dict(state)
    assert rows(restored, 50) == expected


def test_unshuffled_limit_keeps_the_first_rows_once(tiny_shards):
    source = open_source("ani1x", tiny_shards["ani1x"])
    parts = [stream(source, rank, 3, shuffle=False, limit=21, epochs=1) for rank in range(3)]
    seen = sorted(r for p in parts for r in rows(p, p.epoch_rows))
    first = sorted((f, r) for f, file in enumerate(source.files["train"]) for r in range(file.num_rows))[:21]
    assert seen == first and all(p.exhausted() for p in parts)
