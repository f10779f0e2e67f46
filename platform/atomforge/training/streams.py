"""Per-worker task streams over Parquet shards: deterministic order, local shuffle, exact resume.

Each task's split is cut into chunks (row ranges of at most `chunk_rows` in one shard file). Epoch
e of a task permutes the chunks with a generator seeded by (seed, task, e); rank r takes every
world-th chunk from position r (so workers read disjoint data and never wait on each other), groups
its chunks into windows of about `shuffle_rows` rows and permutes the rows of each window (the local
shuffle buffer). A stream's position is (epoch, rows consumed in the epoch); restoring it reloads
one window, so resume is exact and cheap. An exhausted stream starts its next epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class ShardFile:
    """One Parquet shard: path on `fs` (no protocol) and its row count (from the manifest)."""

    path: str
    num_rows: int


@dataclass(frozen=True)
class Chunk:
    file: int  # index into the stream's files
    start: int
    stop: int

    @property
    def num_rows(self) -> int:
        return self.stop - self.start


def make_chunks(files: Sequence[ShardFile], chunk_rows: int) -> list[Chunk]:
    """Every file cut into consecutive row ranges of at most `chunk_rows`."""
    return [
        Chunk(i, start, min(start + chunk_rows, f.num_rows))
        for i, f in enumerate(files)
        for start in range(0, f.num_rows, chunk_rows)
    ]


def rank_chunks(chunks: Sequence[Chunk], seed: int, task_index: int, epoch: int, rank: int, world: int) -> list[Chunk]:
    """The chunks of `rank` in epoch `epoch`: a seeded permutation, every world-th from `rank`.

    With fewer chunks than workers a rank reuses chunk `rank mod len` so no stream is ever empty.
    """
    order = np.random.default_rng([seed, 1, task_index, epoch]).permutation(len(chunks))
    mine = order[rank::world]
    if len(mine) == 0:
        mine = order[[rank % len(order)]]
    return [chunks[i] for i in mine]


class TaskStream:
    """An endless, resumable stream of shard rows (dicts) for one task on one worker."""

    def __init__(self, fs, files: Sequence[ShardFile], *, seed: int, task_index: int, rank: int = 0,
                 world: int = 1, chunk_rows: int = 512, shuffle_rows: int = 4096, shuffle: bool = True,
                 columns: Sequence[str] | None = None):
        if not files or sum(f.num_rows for f in files) == 0:
            raise ValueError(f"task stream {task_index}: no rows in {len(files)} shard files")
        self.fs, self.files = fs, list(files)
        self.seed, self.task_index, self.rank, self.world = seed, task_index, rank, world
        self.shuffle_rows, self.shuffle, self.columns = shuffle_rows, shuffle, columns
        self.chunks = make_chunks(self.files, chunk_rows)
        self.epoch, self.position = 0, 0
        self._table_cache: tuple[int, pa.Table] | None = None
        self._load_epoch()

    # -------------------------------------------------------------- layout of an epoch
    def _load_epoch(self) -> None:
        if self.shuffle:
            mine = rank_chunks(self.chunks, self.seed, self.task_index, self.epoch, self.rank, self.world)
        else:
            mine = self.chunks[self.rank::self.world] or self.chunks[: 1]
        self.windows: list[list[Chunk]] = []
        current, rows = [], 0
        for chunk in mine:
            current.append(chunk)
            rows += chunk.num_rows
            if rows >= self.shuffle_rows:
                self.windows.append(current)
                current, rows = [], 0
        if current:
            self.windows.append(current)
        sizes = [sum(c.num_rows for c in w) for w in self.windows]
        self.window_starts = np.concatenate([[0], np.cumsum(sizes)])
        self.epoch_rows = int(self.window_starts[-1])
        self._window_index, self._window_rows = -1, []

    def _load_window(self, index: int) -> None:
        tables = [self._read(c.file).slice(c.start, c.num_rows) for c in self.windows[index]]
        rows = pa.concat_tables(tables).to_pylist()
        if self.shuffle:
            order = np.random.default_rng([self.seed, 2, self.task_index, self.epoch, self.rank, index]).permutation(len(rows))
            rows = [rows[i] for i in order]
        self._window_index, self._window_rows = index, rows

    def _read(self, file_index: int) -> pa.Table:
        if self._table_cache is None or self._table_cache[0] != file_index:
            with self.fs.open(self.files[file_index].path, "rb") as handle:
                table = pq.read_table(handle, columns=self.columns)
            self._table_cache = (file_index, table)
        return self._table_cache[1]

    # -------------------------------------------------------------- stream interface
    def peek(self) -> dict:
        """The next row, not consumed."""
        if self.position >= self.epoch_rows:
            self.epoch, self.position = self.epoch + 1, 0
            self._load_epoch()
        window = int(np.searchsorted(self.window_starts, self.position, side="right") - 1)
        if window != self._window_index:
            self._load_window(window)
        return self._window_rows[self.position - int(self.window_starts[window])]

    def advance(self) -> None:
        """Consume the row `peek` returned."""
        self.position += 1

    def __iter__(self):
        while True:
            row = self.peek()
            self.advance()
            yield row

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._load_epoch()


def read_rows(fs, files: Sequence[ShardFile], limit: int, rank: int = 0, world: int = 1) -> list[dict]:
    """The first `limit` rows of a split, dealt round-robin to ranks (validation: fixed, unshuffled)."""
    rows: list[dict] = []
    for f in files:
        with fs.open(f.path, "rb") as handle:
            rows.extend(pq.read_table(handle).slice(0, limit - len(rows)).to_pylist())
        if len(rows) >= limit:
            break
    return rows[rank::world]
