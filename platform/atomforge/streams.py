"""Row streams over a split's shards: seeded chunk order per epoch, disjoint ranks, shuffle windows, exact resume.

A stream orders row *references*, never rows: the loader decodes whole windows elsewhere. A split
is cut into chunks (row ranges of at most `chunk_rows` in one shard file). Epoch e permutes the
chunks with a generator seeded by (seed, source, e); rank r takes every world-th chunk from
position r (workers read disjoint data and never wait on each other), groups its chunks into
windows of about `shuffle_rows` rows and permutes the rows of each window (the local shuffle
buffer). A stream's position is (epoch, rows consumed in the epoch), so resuming is exact and cheap.

Unshuffled streams keep manifest order (chunk r, r + world, ...) and never repeat a row: a rank
with no chunk has an empty epoch. Shuffled streams are for training and give a rank with no chunk
of its own one chunk (dealt round-robin), so every rank always has rows.

A stream can read a subset of the split (`rows`: e.g. a fine-tuning set's seeded 950 training
structures out of a pool): chunks then cover the same row ranges but hold only the chosen rows.

`rank` / `world` need not be processes: the trainer gives each *lane* of its global batch (a
world-independent slice, `training.lanes`) its own stream, rank = lane of world = lanes, and one
process may hold several lanes' streams of the same source; `slot` (the stream's index among its
loader's streams) keeps their windows apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ShardFile:
    """One Parquet shard as the manifest lists it: path on the filesystem (no protocol), rows, bytes, sha256."""

    path: str
    num_rows: int
    num_bytes: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Chunk:
    """Rows of one file: start..start+num_rows, or (`rows` given) those rows of the file, sorted."""

    file: int  # index into the stream's files
    start: int
    num_rows: int
    rows: tuple[int, ...] | None = None  # a subset: row indices in the file (num_rows of them)

    @property
    def span(self) -> int:
        """Rows of the file from `start` that must be read to get this chunk's rows."""
        return self.num_rows if self.rows is None else self.rows[-1] - self.start + 1

    def offsets(self) -> np.ndarray | None:
        """The chunk's rows relative to `start` (None: all `span` rows)."""
        return None if self.rows is None else np.asarray(self.rows, dtype=np.int64) - self.start


@dataclass(frozen=True)
class Window:
    """The rows a stream reads together: whole chunks, permuted by `order` (stream position -> concat row).

    `key` = (slot, epoch, index) names it for the loader's window store (slot: the stream's index
    among its loader's streams, by default its source).
    """

    key: tuple[int, int, int]
    chunks: tuple[Chunk, ...]
    shuffle_seed: tuple[int, ...] | None  # None: manifest order

    @property
    def num_rows(self) -> int:
        return sum(c.num_rows for c in self.chunks)

    def order(self) -> np.ndarray:
        """(num_rows,) int64: stream position within the window -> row of the concatenated chunks."""
        if self.shuffle_seed is None:
            return np.arange(self.num_rows)
        return np.random.default_rng(list(self.shuffle_seed)).permutation(self.num_rows)


def make_chunks(files: Sequence[ShardFile], chunk_rows: int, limit: int | None = None,
                rows: np.ndarray | None = None) -> list[Chunk]:
    """Every file's rows (only the first `limit` of the split, in manifest order) in ranges of <= `chunk_rows`.

    `rows`: only these rows of the split (indices into the files' rows concatenated in manifest
    order); a chunk then holds the chosen rows of its range, and ranges without one are skipped.
    """
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    if rows is not None:
        return _subset_chunks(files, chunk_rows, np.asarray(rows, dtype=np.int64), limit)
    chunks, left = [], float("inf") if limit is None else limit
    for i, f in enumerate(files):
        for start in range(0, f.num_rows, chunk_rows):
            num = int(min(chunk_rows, f.num_rows - start, left))
            if num <= 0:
                return chunks
            chunks.append(Chunk(i, start, num))
            left -= num
    return chunks


def _subset_chunks(files: Sequence[ShardFile], chunk_rows: int, rows: np.ndarray, limit: int | None) -> list[Chunk]:
    total = sum(f.num_rows for f in files)
    if rows.size and (rows.min() < 0 or rows.max() >= total or np.any(np.diff(rows) <= 0)):
        raise ValueError(f"rows must be sorted, unique indices in [0, {total}), got {rows.size} rows "
                         f"in [{rows.min()}, {rows.max()}]")
    rows = rows[:limit] if limit is not None else rows
    starts = np.concatenate([[0], np.cumsum([f.num_rows for f in files])]).astype(np.int64)
    chunks = []
    for i, f in enumerate(files):
        mine = rows[(rows >= starts[i]) & (rows < starts[i + 1])] - starts[i]
        for start in range(0, f.num_rows, chunk_rows):
            inside = mine[(mine >= start) & (mine < start + chunk_rows)]
            if inside.size:
                chunks.append(Chunk(i, int(inside[0]), int(inside.size), tuple(int(r) for r in inside)))
    return chunks


def rank_chunks(chunks: Sequence[Chunk], seed: int, source: int, epoch: int, rank: int, world: int) -> list[Chunk]:
    """This rank's chunks in epoch `epoch` (a seeded permutation, then every world-th from `rank`)."""
    order = np.random.default_rng([seed, 1, source, epoch]).permutation(len(chunks))
    mine = order[rank::world]
    if len(mine) == 0:
        mine = order[[rank % len(order)]]
    return [chunks[i] for i in mine]


class RowStream:
    """The row order of one source (a dataset's split) on one rank: windows, epochs, position.

    `sizes(window)` (set by the loader) gives the atom counts (in window order, i.e. after `Window.order`) of a window's
    rows; the loader answers it from the decoded window, so the stream itself never reads a shard.
    `epochs=None` streams forever (each exhausted epoch starts the next); otherwise the stream ends.
    `limit` keeps only the split's first rows (in manifest order), e.g. a fixed validation subset;
    `rows` only those rows of the split (see `make_chunks`). `slot`: the first part of its windows'
    keys (default `source`): the stream's index in its loader, which may hold several streams of
    one source (one per lane).
    """

    def __init__(self, files: Sequence[ShardFile], sizes: Callable[[Window], np.ndarray] | None = None, *, seed: int,
                 source: int = 0, rank: int = 0, world: int = 1, chunk_rows: int = 512, shuffle_rows: int = 4096,
                 shuffle: bool = True, epochs: int | None = None, limit: int | None = None,
                 rows: np.ndarray | None = None, slot: int | None = None):
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, {world}), got {rank}")
        if sum(f.num_rows for f in files) == 0:
            raise ValueError(f"source {source}: no rows in {len(files)} shard files")
        if shuffle_rows <= 0:
            raise ValueError(f"shuffle_rows must be positive, got {shuffle_rows}")
        self.files, self.sizes = list(files), sizes
        self.seed, self.source, self.rank, self.world = seed, source, rank, world
        self.slot = source if slot is None else slot
        self.shuffle_rows, self.shuffle, self.epochs = shuffle_rows, shuffle, epochs
        self.chunks = make_chunks(self.files, chunk_rows, limit, rows)
        if not self.chunks:
            raise ValueError(f"source {source}: the row subset selects no rows of {len(files)} shard files")
        self._layouts: dict[int, list[Window]] = {}
        self.epoch, self.position = 0, 0
        self._layout(0)

    # ---------------------------------------------------------------- layout of an epoch
    def windows(self, epoch: int) -> list[Window]:
        """This rank's windows of `epoch`, in stream order."""
        if epoch not in self._layouts:
            if len(self._layouts) >= 3:
                self._layouts.pop(min(self._layouts))
            self._layouts[epoch] = self._make_windows(epoch)
        return self._layouts[epoch]

    def window(self, key: tuple[int, int, int]) -> Window:
        """The window named `key` = (slot, epoch, index)."""
        return self.windows(key[1])[key[2]]

    def _make_windows(self, epoch: int) -> list[Window]:
        if self.shuffle:
            mine = rank_chunks(self.chunks, self.seed, self.source, epoch, self.rank, self.world)
        else:
            mine = self.chunks[self.rank::self.world]
        groups: list[list[Chunk]] = []
        current, rows = [], 0
        for chunk in mine:
            current.append(chunk)
            rows += chunk.num_rows
            if rows >= self.shuffle_rows:
                groups.append(current)
                current, rows = [], 0
        if current:
            groups.append(current)
        return [Window((self.slot, epoch, i), tuple(g),
                       (self.seed, 2, self.source, epoch, self.rank, i) if self.shuffle else None)
                for i, g in enumerate(groups)]

    def _layout(self, epoch: int) -> None:
        self._windows = self.windows(epoch)
        self.window_starts = np.concatenate([[0], np.cumsum([w.num_rows for w in self._windows])]).astype(np.int64)
        self.epoch_rows = int(self.window_starts[-1])
        self._current: tuple[int, int, int, np.ndarray] | None = None  # (window, start, end, sizes)

    def windows_ahead(self, count: int) -> list[Window]:
        """The window of the next row and the ones after it, `count` in all (fewer where a finite stream ends)."""
        if self.exhausted():
            return []
        epoch, layout = self.epoch, self._windows
        index = int(np.searchsorted(self.window_starts, self.position, side="right") - 1)
        out: list[Window] = []
        while len(out) < count:
            if index < len(layout):
                out.append(layout[index])
                index += 1
                continue
            epoch += 1
            if self.epochs is not None and epoch >= self.epochs:
                break
            layout, index = self.windows(epoch), 0
            if not layout:
                break
        return out

    # ---------------------------------------------------------------- stream interface
    def exhausted(self) -> bool:
        """True when a finite stream has no rows left (an epoch boundary is crossed first)."""
        self._roll()
        return self.epochs is not None and self.epoch >= self.epochs

    def _roll(self) -> None:
        while self.position >= self.epoch_rows and (self.epochs is None or self.epoch < self.epochs):
            if self.epoch_rows == 0 and self.epochs is None:
                raise ValueError(f"source {self.source}: rank {self.rank} has no rows in an endless stream")
            self.epoch, self.position = self.epoch + 1, 0
            self._layout(self.epoch)

    def _locate(self) -> tuple[int, int, int, np.ndarray]:
        current = self._current
        if current is None or not current[1] <= self.position < current[2]:
            index = int(np.searchsorted(self.window_starts, self.position, side="right") - 1)
            start, end = int(self.window_starts[index]), int(self.window_starts[index + 1])
            current = self._current = (index, start, end, self.sizes(self._windows[index]))
        return current

    def peek(self) -> int:
        """The atom count of the next row (not consumed); the epoch rolls over first when it ended."""
        self._roll()
        _, start, _, sizes = self._locate()
        return int(sizes[self.position - start])

    def advance(self) -> tuple[tuple[int, int, int], int]:
        """Consume the next row: (window key, position within the window)."""
        index, start, _, _ = self._locate()
        self.position += 1
        return self._windows[index].key, self.position - 1 - start

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._layout(self.epoch)
