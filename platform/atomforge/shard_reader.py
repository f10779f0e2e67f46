"""Reading shard files for the loader: whole objects checked against the manifest, decoded row groups, sizes.

`Source` names one stream's data (dataset root, its shard files, the graph it feeds). `ShardReader`
is what each process (the loader's planner, every builder) reads them with: a shard's bytes are
verified (size and sha256 from the manifest) whenever they are fetched, row groups decoded once
into a small LRU cache, a window's shards fetched several at a time (object-store latency overlaps
instead of adding up), and the planner's `num_atoms` columns read by byte range, not whole files.
"""

from __future__ import annotations

import hashlib
import io
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from atomforge.columnar import COLUMNS, RowBlock, concat_blocks, decode_columns, refilter_block
from atomforge.storage import filesystem, read_bytes
from atomforge.streams import ShardFile, Window


@dataclass(frozen=True)
class Source:
    """One stream's data: a dataset root, its shard files for a split, and the graph it feeds.

    cutoff Å and max_neighbors (None = no limit) are the re-filter's; tie_rule as in `atomforge.graph`.
    """

    name: str
    url: str
    files: tuple[ShardFile, ...]
    cutoff: float
    max_neighbors: int | None
    tie_rule: str = "strict"
    task: int = 0  # the `task` id its graphs carry
    storage_options: dict | None = field(default=None, repr=False, compare=False)

    def filesystem(self):
        return filesystem(self.url, self.storage_options)[0]


# fsspec file options for reading a few byte ranges of a shard (footer, one column chunk): 64 KiB
# read-ahead blocks, not s3fs's default 5 MiB (which fetches all of a small shard for its footer).
_RANGE_READS = {"cache_type": "readahead", "block_size": 1 << 16}
FETCH_THREADS = 8  # shards read at once by a window's decode or the planner's sizes


class ShardReader:
    """Reads shard files for one process: whole objects, verified against the manifest, then decoded.

    A file's bytes are checked (size and sha256 from the manifest) every time they are fetched; decoded
    row groups are kept in a small LRU cache (`cache_bytes`), since a window's chunks may share a file.
    """

    def __init__(self, cache_bytes: int = 256 << 20):
        self.cache_bytes = cache_bytes
        self._tables: OrderedDict[tuple[str, int], pa.Table] = OrderedDict()
        self._cached_bytes = 0  # nbytes of _tables (Table.nbytes walks every buffer: summed once per table)
        self._sizes: OrderedDict[str, np.ndarray] = OrderedDict()
        self._groups: dict[str, np.ndarray] = {}  # path -> row-group boundaries (num_groups + 1,)
        self._fs: dict[str, Any] = {}

    def _filesystem(self, source: Source):
        if source.url not in self._fs:
            self._fs[source.url] = source.filesystem()
        return self._fs[source.url]

    def fetch(self, source: Source, file: ShardFile) -> bytes:
        """The bytes of `file`, checked against the manifest's size and sha256."""
        data = read_bytes(self._filesystem(source), file.path)
        if file.num_bytes is not None and len(data) != file.num_bytes:
            raise ValueError(f"{file.path}: {len(data)} bytes, the manifest says {file.num_bytes}: shard changed or torn")
        if file.sha256 is not None and hashlib.sha256(data).hexdigest() != file.sha256:
            raise ValueError(f"{file.path}: sha256 differs from the manifest's: shard corrupt or replaced")
        return data

    def _needs_fetch(self, file: ShardFile, start: int, num_rows: int) -> bool:
        groups = self._groups.get(file.path)
        return groups is None or any((file.path, g) not in self._tables for g in _overlapping(groups, start, num_rows))

    def rows(self, source: Source, file: ShardFile, start: int, num_rows: int, data: bytes | None = None) -> pa.Table:
        """Rows start..start+num_rows of `file` (the loader's columns), decoding only the row groups needed
        (from `data`, the file's checked bytes, when given)."""
        handle = None
        if self._needs_fetch(file, start, num_rows):
            handle = pq.ParquetFile(io.BytesIO(self.fetch(source, file) if data is None else data))
            meta = handle.metadata
            sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            self._groups[file.path] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        groups = self._groups[file.path]
        parts = []
        for g in _overlapping(groups, start, num_rows):
            key = (file.path, g)
            if key not in self._tables:
                self._remember(key, handle.read_row_group(g, columns=list(COLUMNS)))
            self._tables.move_to_end(key)
            lo = max(start - int(groups[g]), 0)
            hi = min(start + num_rows, int(groups[g + 1])) - int(groups[g])
            parts.append(self._tables[key].slice(lo, hi - lo))
        return pa.concat_tables(parts)

    def _remember(self, key, table: pa.Table) -> None:
        self._tables[key] = table
        self._cached_bytes += table.nbytes
        while len(self._tables) > 1 and self._cached_bytes > self.cache_bytes:
            self._cached_bytes -= self._tables.popitem(last=False)[1].nbytes

    def sizes(self, source: Source, file: ShardFile) -> np.ndarray:
        """The `num_atoms` column of `file` (int64), kept for the next window (see `_read_sizes`)."""
        if file.path not in self._sizes:
            self._sizes[file.path] = self._read_sizes(source, file)
            while len(self._sizes) > 1024:
                self._sizes.popitem(last=False)
        self._sizes.move_to_end(file.path)
        return self._sizes[file.path]

    def _read_sizes(self, source: Source, file: ShardFile) -> np.ndarray:
        """Read by range: the Parquet footer and the `num_atoms` column chunk, not the file (on object
        storage the planner would otherwise download every shard that its builders download again). Its
        size and row count are checked against the manifest here; the builder checks the sha256 of every
        byte it decodes, so a changed shard still fails before any of its rows is trained on.
        """
        fs = self._filesystem(source)
        with fs.open(file.path, "rb", **_RANGE_READS) as handle:
            size = getattr(handle, "size", None)
            size = fs.size(file.path) if size is None else size
            if file.num_bytes is not None and size != file.num_bytes:
                raise ValueError(f"{file.path}: {size} bytes, the manifest says {file.num_bytes}: shard changed or torn")
            try:
                table = pq.ParquetFile(handle).read(columns=["num_atoms"])
            except (OSError, pa.ArrowException) as err:
                self.fetch(source, file)  # a damaged shard: its checksum error names it
                raise ValueError(f"{file.path}: unreadable Parquet ({err})") from err
        if table.num_rows != file.num_rows:
            raise ValueError(f"{file.path}: {table.num_rows} rows, the manifest says {file.num_rows}")
        return table["num_atoms"].to_numpy().astype(np.int64)

    def _concurrently(self, function, source: Source, files: Sequence[ShardFile]) -> list:
        """`function(source, file)` for every file, up to FETCH_THREADS at once (object-store latency overlaps)."""
        if len(files) <= 1:
            return [function(source, file) for file in files]
        with ThreadPoolExecutor(min(FETCH_THREADS, len(files)), thread_name_prefix="atomforge-fetch") as pool:
            return list(pool.map(lambda file: function(source, file), files))

    def window(self, source: Source, window: Window) -> RowBlock:
        """The decoded rows of `window` in chunk order (re-filtered at the source's cutoff and K, once
        the chunks are joined: the kept edges are not copied again).

        The shards to download are fetched FETCH_THREADS at a time, each group before its rows are decoded.
        """
        blocks, fetched = [], {}
        chunks = window.chunks
        for i, chunk in enumerate(chunks):
            file = source.files[chunk.file]
            if file.path not in fetched and self._needs_fetch(file, chunk.start, chunk.span):
                group = self._to_fetch(source, chunks[i:])
                fetched = dict(zip([f.path for f in group], self._concurrently(self.fetch, source, group)))
            table = self.rows(source, file, chunk.start, chunk.span, fetched.get(file.path))
            if chunk.rows is not None:  # a subset of the range: decode only its rows
                table = table.take(chunk.offsets())
            blocks.append(decode_columns(table, source.cutoff, source.max_neighbors, where=file.path,
                                         first_row=chunk.start))
        return refilter_block(blocks[0] if len(blocks) == 1 else concat_blocks(blocks), source.tie_rule)

    def _to_fetch(self, source: Source, chunks) -> list[ShardFile]:
        """The first FETCH_THREADS distinct files that `chunks` (the first one needing a fetch) must download."""
        files: dict[str, ShardFile] = {}
        for chunk in chunks:
            file = source.files[chunk.file]
            if file.path not in files and self._needs_fetch(file, chunk.start, chunk.span):
                files[file.path] = file
                if len(files) == FETCH_THREADS:
                    break
        return list(files.values())

    def window_sizes(self, source: Source, window: Window) -> np.ndarray:
        """Atom counts of `window`'s rows in stream order (what the planner budgets with)."""
        files = [source.files[c.file] for c in window.chunks]
        missing = list({f.path: f for f in files if f.path not in self._sizes}.values())
        for file, sizes in zip(missing, self._concurrently(self._read_sizes, source, missing)):
            self._sizes[file.path] = sizes
        sizes = np.concatenate([self.sizes(source, file)[np.asarray(c.rows) if c.rows is not None
                                                         else slice(c.start, c.start + c.num_rows)]
                                for c, file in zip(window.chunks, files)])
        return sizes[window.order()]


def _overlapping(groups: np.ndarray, start: int, num_rows: int) -> range:
    """Row groups (boundaries `groups`) holding any of rows start..start+num_rows."""
    first = int(np.searchsorted(groups, start, side="right") - 1)
    last = int(np.searchsorted(groups, start + num_rows, side="left"))
    return range(first, last)
