"""Columnar batch building: Arrow shard rows -> `RowBlock`s of numpy columns -> model-ready PyG batches.

The loader's hot path, in two steps, neither with a per-row Python object:
- `decode_rows` turns an Arrow table of shard rows (one window of a stream) into a `RowBlock`:
  every field taken from its column's values buffer (list offsets = cumulative `num_atoms` and
  `num_edges`), null labels filled as `collate` fills them, and the stored Verlet candidates
  re-filtered at the row's cutoff and K for all rows at once (`keep_edges`). It also runs the read
  path's guard, `check_table`: offsets agree with the counts, edge indices lie inside their
  structure, positions are finite; a failure is a ValueError naming the shard, the row and the field.
- `gather` takes any rows of one or more blocks (index arithmetic on the offsets) and assembles a
  Batch with exactly the fields, dtypes, values and PyG slices of `atomforge.batch.collate` on the
  same rows (`batch.py` documents the fields).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch_geometric.data import Batch, Data

from atomforge.graph import TIE_DECIMALS, TIE_RULES, TOLERANT_TIE
from atomforge.schema import ARROW_SCHEMA, MAX_ATOMIC_NUMBER

# Shard columns the loader reads (the others are bookkeeping for the pipeline).
COLUMNS = ("system_id", "frame_kind", "num_atoms", "num_edges", "atomic_numbers", "positions", "cell", "pbc",
           "energy", "forces", "stress", "fixed", "tags", "edge_src", "edge_dst", "edge_shift")
# RowBlock arrays by what they are indexed by; (dtype, values per item).
ROW = {"natoms": (np.int64, 1), "ncand": (np.int64, 1), "nkept": (np.int64, 1), "nsid": (np.int64, 1),
       "energy": (np.float64, 1), "has_energy": (bool, 1), "has_forces": (bool, 1), "has_stress": (bool, 1),
       "is_md": (bool, 1), "cell": (np.float32, 9), "pbc": (bool, 3), "stress": (np.float32, 9),
       "cutoff": (np.float64, 1), "max_neighbors": (np.int64, 1)}
ATOM = {"z": (np.uint8, 1), "pos": (np.float32, 3), "forces": (np.float32, 3), "fixed": (bool, 1), "tags": (np.int8, 1)}
CAND = {"cand_src": (np.int32, 1), "cand_dst": (np.int32, 1), "cand_shift": (np.int8, 3)}
KEPT = {"kept_src": (np.int32, 1), "kept_dst": (np.int32, 1), "kept_shift": (np.int8, 3)}
SID = {"sid": (np.uint8, 1)}
GROUPS = ((ATOM, "natoms"), (CAND, "ncand"), (KEPT, "nkept"), (SID, "nsid"))  # per-item arrays and their counts
# Batch fields in the order `batch.structure_data` creates them (PyG keeps insertion order).
FIELD_ORDER = ("z", "pos", "ref_pos", "edge_index", "shifts", "cand_edge_index", "cand_shifts", "cell", "pbc",
               "energy", "has_energy", "forces", "has_forces", "stress", "has_stress", "fixed", "tags", "is_md",
               "task", "natoms", "cutoff", "max_neighbors", "system_id")
PER_ATOM = ("z", "pos", "ref_pos", "forces", "fixed", "tags")
# Candidates re-filtered at once: the float64 temporaries (8 bytes per candidate each) stay in cache and
# are reused by the allocator; 16x larger chunks ran ~15% slower per structure, mostly in page faults.
REFILTER_EDGES = 1 << 16
SLICE_ROWS = 256  # rows gathered by slices at most (see `gather_rows`)
OFFSET_TABLE_ENTRIES = 1 << 20  # (graph, shift) offsets tabulated at most; beyond, offsets are computed per edge


@dataclass
class RowBlock:
    """Rows as numpy columns: `arrays[name]` for the names of ROW, ATOM, CAND, KEPT and SID.

    Per-row arrays have one entry (or 9, 3 values) per row; per-atom / per-edge / per-byte arrays are
    concatenated over rows, delimited by the counts natoms, ncand (stored candidates), nkept (edges
    kept by the re-filter, in build order) and nsid (UTF-8 bytes of the system id). Edge indices are
    local to their structure. Arrays may be read-only views of a shared-memory file.
    """

    arrays: dict[str, np.ndarray]
    _starts: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def num_rows(self) -> int:
        return len(self.arrays["natoms"])

    def starts(self, count: str) -> np.ndarray:
        """(num_rows + 1,) int64 offsets of the per-item arrays counted by `count`."""
        if count not in self._starts:
            self._starts[count] = np.concatenate([[0], np.cumsum(self.arrays[count])]).astype(np.int64)
        return self._starts[count]


# ---------------------------------------------------------------- decoding: Arrow -> RowBlock
def _array(table: pa.Table, name: str):
    column = table.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _values(array, dtype) -> np.ndarray:
    """The values of a list column's valid rows, concatenated."""
    return np.asarray(array.flatten().to_numpy(zero_copy_only=False), dtype=dtype)


def _valid(array) -> np.ndarray:
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _fixed_rows(array, width: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(values (B, width), zeros in null rows; valid (B,)) of a fixed-size list column."""
    valid = _valid(array)
    out = np.zeros((len(array), width), dtype=dtype)
    out[valid] = _values(array, dtype).reshape(-1, width)
    return out, valid


def _per_atom(array, natoms: np.ndarray, width: int, dtype, fill) -> tuple[np.ndarray, np.ndarray]:
    """(values (N, width) with `fill` for rows whose list is null, valid (B,))."""
    valid = _valid(array)
    if valid.all():
        return _values(array, dtype).reshape(-1, width), valid
    out = np.full((int(natoms.sum()), width), fill, dtype=dtype)
    out[np.repeat(valid, natoms)] = _values(array, dtype).reshape(-1, width)
    return out, valid


def _lengths_of(array) -> np.ndarray:
    """(B,) list lengths from the offsets (0 for null rows)."""
    offsets = np.asarray(array.offsets.to_numpy(), dtype=np.int64)
    return np.where(_valid(array), np.diff(offsets), 0)


def _fail(table: pa.Table, where: str, first_row: int, rows: np.ndarray, name: str, why: str) -> None:
    row = int(np.flatnonzero(rows)[0])
    sid = table.column("system_id")[row].as_py()
    raise ValueError(f"{where}: row {first_row + row} ({sid}): field {name!r} {why}")


def check_table(table: pa.Table, where: str, first_row: int = 0) -> None:
    """Raise ValueError naming `where` (the shard), the row and the field where the columns disagree.

    Offsets only (no values): column types, list lengths against num_atoms / num_edges, and a stored
    graph on every row. `decode_rows` checks the values it extracts (indices, elements, finiteness).
    """
    for name in COLUMNS:
        expected = ARROW_SCHEMA.field(name).type
        got = table.schema.field(name).type if name in table.column_names else "missing"
        if got != expected:
            raise ValueError(f"{where}: column {name!r} is {got}, the shard schema says {expected}")
    natoms = _array(table, "num_atoms").to_numpy().astype(np.int64)
    nedges = _array(table, "num_edges").to_numpy().astype(np.int64)
    for name, per, counts, what in (("atomic_numbers", 1, natoms, "num_atoms"), ("positions", 3, natoms, "num_atoms"),
                                    ("forces", 3, natoms, "num_atoms"), ("fixed", 1, natoms, "num_atoms"),
                                    ("tags", 1, natoms, "num_atoms"), ("edge_src", 1, nedges, "num_edges"),
                                    ("edge_dst", 1, nedges, "num_edges"), ("edge_shift", 3, nedges, "num_edges")):
        array = _array(table, name)
        valid = _valid(array)
        if name.startswith("edge_") and not valid.all():
            _fail(table, where, first_row, ~valid, name, "is null: the shard has no stored graph (preprocess with a cutoff)")
        bad = valid & (_lengths_of(array) != per * counts)
        if bad.any():
            _fail(table, where, first_row, bad, name, f"has a length that disagrees with {what}")


def _check_values(table: pa.Table, where: str, first_row: int, a: dict[str, np.ndarray]) -> None:
    """Edge indices inside their structure, atomic numbers in 1..118, finite positions (vectorised)."""
    rows = len(a["natoms"])
    edge_row = np.repeat(np.arange(rows), a["ncand"])
    limit = np.repeat(a["natoms"], a["ncand"])
    for name in ("cand_src", "cand_dst"):
        bad = a[name] >= limit  # int32 from int32 lists; negative values are caught too:
        bad |= a[name] < 0
        if bad.any():
            _fail(table, where, first_row, np.bincount(edge_row[bad], minlength=rows) > 0,
                  name.replace("cand_", "edge_"), "points outside its structure")
    atom_row = np.repeat(np.arange(rows), a["natoms"])
    bad_z = (a["z"] < 1) | (a["z"] > MAX_ATOMIC_NUMBER)
    if bad_z.any():
        _fail(table, where, first_row, np.bincount(atom_row[bad_z], minlength=rows) > 0, "atomic_numbers",
              f"has values outside 1..{MAX_ATOMIC_NUMBER}")
    finite = np.isfinite(a["pos"]).all(axis=1)
    if not finite.all():
        _fail(table, where, first_row, np.bincount(atom_row[~finite], minlength=rows) > 0, "positions", "contains NaN or inf")


def decode_rows(table: pa.Table, cutoff, max_neighbors, tie_rule: str = "strict", where: str = "rows",
                first_row: int = 0) -> RowBlock:
    """A RowBlock of `table`'s rows with edges re-filtered at `cutoff` Å and K, checked on the way.

    cutoff and max_neighbors (-1 or None = no limit) are scalars or one per row; `where` (the shard)
    and `first_row` (its first row's index there) name the row in errors.
    """
    check_table(table, where, first_row)
    rows = table.num_rows
    natoms = _array(table, "num_atoms").to_numpy().astype(np.int64)
    ncand = _array(table, "num_edges").to_numpy().astype(np.int64)
    energy = _array(table, "energy")
    forces, has_forces = _per_atom(_array(table, "forces"), natoms, 3, np.float32, 0.0)
    stress, has_stress = _fixed_rows(_array(table, "stress"), 9, np.float32)
    sid = _array(table, "system_id").cast(pa.string())
    sid_offsets = np.frombuffer(sid.buffers()[1], dtype=np.int32)[sid.offset:sid.offset + rows + 1].astype(np.int64)
    limit = -1 if max_neighbors is None else max_neighbors
    arrays = {
        "natoms": natoms, "ncand": ncand,
        "nsid": np.diff(sid_offsets),
        "energy": np.asarray(energy.to_numpy(zero_copy_only=False), dtype=np.float64),  # null -> NaN
        "has_energy": _valid(energy), "has_forces": has_forces, "has_stress": has_stress,
        "is_md": np.asarray(pc.equal(_array(table, "frame_kind"), "md").to_numpy(zero_copy_only=False), dtype=bool),
        "cell": _fixed_rows(_array(table, "cell"), 9, np.float32)[0],
        "pbc": _fixed_rows(_array(table, "pbc"), 3, bool)[0],
        "stress": stress,
        "cutoff": np.broadcast_to(np.asarray(cutoff, dtype=np.float64), (rows,)).copy(),
        "max_neighbors": np.broadcast_to(np.asarray(limit, dtype=np.int64), (rows,)).copy(),
        "z": _values(_array(table, "atomic_numbers"), np.uint8),
        "pos": _values(_array(table, "positions"), np.float32).reshape(-1, 3),
        "forces": forces,
        "fixed": _per_atom(_array(table, "fixed"), natoms, 1, bool, False)[0].reshape(-1),
        "tags": _per_atom(_array(table, "tags"), natoms, 1, np.int8, -1)[0].reshape(-1),
        "cand_src": _values(_array(table, "edge_src"), np.int32),
        "cand_dst": _values(_array(table, "edge_dst"), np.int32),
        "cand_shift": _values(_array(table, "edge_shift"), np.int8).reshape(-1, 3),
        "sid": np.frombuffer(sid.buffers()[2], dtype=np.uint8)[sid_offsets[0]:sid_offsets[-1]].copy(),
    }
    _check_values(table, where, first_row, arrays)
    block = RowBlock(arrays)
    kept = [_kept(block, lo, hi, tie_rule) for lo, hi in _chunks(block.starts("ncand"), REFILTER_EDGES)]
    for name in (*KEPT, "nkept"):
        arrays[name] = np.concatenate([k[name] for k in kept])
    return block


def _chunks(starts: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Consecutive row ranges (lo, hi) of about `size` items each (at least one row; one empty range
    for no rows), from the rows' item offsets `starts` (num_rows + 1,)."""
    rows = len(starts) - 1
    bounds = [0]
    while bounds[-1] < rows:
        lo = bounds[-1]
        hi = int(np.searchsorted(starts, starts[lo] + size, side="right")) - 1
        bounds.append(min(max(hi, lo + 1), rows))
    return list(zip(bounds[:-1], bounds[1:])) or [(0, 0)]


def _kept(block: RowBlock, lo: int, hi: int, tie_rule: str) -> dict[str, np.ndarray]:
    """The re-filtered edges of rows lo..hi (local indices, build order) and their counts."""
    a, atom_start, cand_start = block.arrays, block.starts("natoms"), block.starts("ncand")
    e0, e1 = cand_start[lo], cand_start[hi]
    ncand = a["ncand"][lo:hi]
    edge_row = np.repeat(np.arange(hi - lo), ncand)
    offset = np.repeat(atom_start[lo:hi] - atom_start[lo], ncand)
    edge_index = np.stack([a["cand_src"][e0:e1] + offset, a["cand_dst"][e0:e1] + offset])
    pos = a["pos"][atom_start[lo]:atom_start[hi]]
    keep = keep_edges(pos, a["cell"][lo:hi].reshape(-1, 3, 3), edge_index, a["cand_shift"][e0:e1], edge_row,
                      a["cutoff"][lo:hi], a["max_neighbors"][lo:hi], tie_rule)
    # np.take, not fancy indexing: for the (E, 3) shifts it is ~4x faster
    return {"kept_src": np.take(a["cand_src"][e0:e1], keep), "kept_dst": np.take(a["cand_dst"][e0:e1], keep),
            "kept_shift": np.take(a["cand_shift"][e0:e1], keep, axis=0),
            "nkept": np.bincount(np.take(edge_row, keep), minlength=hi - lo)}


def _lengths(positions, cells, edge_index, shifts, edge_graph) -> np.ndarray:
    """`graph.edge_lengths` with one cell per graph, bit for bit: the same float64 operations in the same
    order, one Cartesian component at a time (1-D takes are several times faster than row gathers).

    The image offset `shift @ cell` takes few values: one per (graph, shift), and shifts span a few
    integers. So it is computed once per graph for every shift in the block's range (the same float64
    operations as per edge, hence the same bits) and gathered by a (graph, shift) code: three takes per
    edge instead of nine, and no per-edge products. Blocks whose shift range would make that table
    large fall back to the per-edge products.
    """
    src, dst = edge_index
    pos = np.ascontiguousarray(positions.T, dtype=np.float64)  # (3, N)
    if len(src) == 0:
        return np.zeros(0)
    low = int(shifts.min())
    span = int(shifts.max()) - low + 1
    if len(cells) * span**3 <= OFFSET_TABLE_ENTRIES:
        grid = np.arange(low, low + span, dtype=np.float64)
        image = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)  # (span³, 3)
        cell = np.asarray(cells, dtype=np.float64)  # (graph, row, component)
        table = (image[None, :, 0, None] * cell[:, None, 0, :] + image[None, :, 1, None] * cell[:, None, 1, :]
                 + image[None, :, 2, None] * cell[:, None, 2, :])  # (graph, span³, 3): offset per shift
        table = np.ascontiguousarray(table.reshape(-1, 3).T)  # (3, graph·span³)
        local = shifts.astype(np.int64) - low
        code = edge_graph * span**3 + (local[:, 0] * span + local[:, 1]) * span + local[:, 2]
        offsets = [np.take(table[k], code) for k in range(3)]
    else:
        cell = np.ascontiguousarray(cells.transpose(1, 2, 0), dtype=np.float64)  # (row, component, graph)
        image = np.ascontiguousarray(shifts.T, dtype=np.float64)  # (3, E)
        offsets = [image[0] * np.take(cell[0, k], edge_graph) + image[1] * np.take(cell[1, k], edge_graph)
                   + image[2] * np.take(cell[2, k], edge_graph) for k in range(3)]
    squared = None
    for k in range(3):
        v = np.take(pos[k], src) + offsets[k] - np.take(pos[k], dst)
        squared = v * v if squared is None else squared + v * v
    return np.sqrt(squared)


def keep_edges(positions: np.ndarray, cells: np.ndarray, edge_index: np.ndarray, shifts: np.ndarray,
               edge_graph: np.ndarray, cutoff: np.ndarray, max_neighbors: np.ndarray, tie_rule: str) -> np.ndarray:
    """`graph.refilter` for many structures at once, each with its cutoff and K: kept candidates, in build order.

    positions (N, 3) Å; cells (B, 3, 3) Å (any values where not periodic: shifts are zero there);
    edge_index (2, E) [src, dst] over all N atoms; shifts (E, 3) integer images; edge_graph (E,) the
    structure of each edge; cutoff (B,) Å; max_neighbors (B,), -1 = no limit. Stored candidates are
    in (dst, distance, src, shift) order, so `refilter`'s two stable sorts are skipped when the
    recomputed distances keep that order (checked; otherwise the same sorts run).
    """
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie_rule must be one of {TIE_RULES}, got {tie_rule!r}")
    distance = _lengths(positions, cells, edge_index, shifts, edge_graph)
    within = np.flatnonzero(distance <= _per_edge(cutoff, np.float64, edge_graph))
    dst = edge_index[1, within]
    rounded = torch.round(torch.from_numpy(distance[within]), decimals=TIE_DECIMALS).numpy()  # as refilter rounds
    new_atom = np.ones(len(within), dtype=bool)
    new_atom[1:] = dst[1:] != dst[:-1]
    if (dst[1:] < dst[:-1]).any() or (~new_atom[1:] & (rounded[1:] < rounded[:-1])).any():
        by_distance = torch.sort(torch.from_numpy(rounded), stable=True).indices
        order = by_distance[torch.sort(torch.from_numpy(dst)[by_distance], stable=True).indices].numpy()
        within, dst = within[order], dst[order]
        new_atom[1:] = dst[1:] != dst[:-1]
    limit = _per_edge(max_neighbors, np.int64, edge_graph, within)
    unlimited = limit < 0
    if unlimited.all():
        return within
    index = np.arange(len(within))
    rank = index - np.maximum.accumulate(np.where(new_atom, index, 0))  # place in its dst's list
    if tie_rule == "strict":
        return within[unlimited | (rank < limit)]
    kth = np.full(positions.shape[0], np.inf)
    at_k = rank == limit - 1
    kth[dst[at_k]] = distance[within[at_k]]
    return within[unlimited | (distance[within] <= kth[dst] + TOLERANT_TIE)]


def _per_edge(values, dtype, edge_graph: np.ndarray, edges: np.ndarray | None = None) -> np.ndarray:
    """A per-graph value for every edge (of `edges`, default all), as one scalar when all graphs share it
    (the usual case: one cutoff and K per source), sparing a take and a per-edge array."""
    values = np.asarray(values, dtype=dtype)
    if values.size and (values == values.flat[0]).all():
        return values.flat[0]
    return np.take(values, edge_graph if edges is None else edge_graph[edges])


# ---------------------------------------------------------------- gathering: RowBlocks -> Batch
def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated arange(s, s + n) for every (s, n): the item indices of some rows."""
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(starts - (ends - lengths), lengths)


def take_rows(block: RowBlock, rows: np.ndarray) -> RowBlock:
    """A new RowBlock (own, writable arrays) holding `rows` of `block` in that order."""
    return gather_rows([(block, rows)])


def concat_blocks(blocks: Sequence[RowBlock]) -> RowBlock:
    """The rows of several blocks, one after the other."""
    return RowBlock({name: np.concatenate([b.arrays[name] for b in blocks]) for name in blocks[0].arrays})


def gather_rows(parts: Sequence[tuple[RowBlock, np.ndarray]], order: np.ndarray | None = None) -> RowBlock:
    """Rows taken from blocks into a new RowBlock (own, writable arrays): `parts` = [(block, rows), ...],
    concatenated, then `order`ed (optional permutation: row i of the result = concatenated row order[i]).

    A row's atoms, candidates, kept edges and id bytes are contiguous in its block, so up to
    SLICE_ROWS rows are copied as slices (one memcpy per row and array); more rows, whose Python
    loop would cost more than the copies, by item indices (`_take_items`). Both give the same arrays.
    """
    rows = [np.asarray(r, dtype=np.int64) for _, r in parts]
    which = np.repeat(np.arange(len(parts)), [len(r) for r in rows])
    where = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    if order is not None:
        order = np.asarray(order, dtype=np.int64)
        which, where = which[order], where[order]
    blocks = [block for block, _ in parts]
    picks = [(i, where[which == i]) for i in range(len(blocks))]
    out = {}
    for name in ROW:  # per-row values: taken per block, then put in draw order
        values = [np.take(blocks[i].arrays[name], r, axis=0) for i, r in picks]
        merged = values[0] if len(values) == 1 else np.concatenate(values)
        out[name] = merged if len(values) == 1 else merged[np.argsort(which, kind="stable").argsort(kind="stable")]
    gather = _slice_items if len(where) <= SLICE_ROWS else _take_items
    for group, count in GROUPS:
        out.update(gather(blocks, which, where, group, count))
    return RowBlock(out)


def _slice_items(blocks: Sequence[RowBlock], which: np.ndarray, where: np.ndarray, group: dict, count: str) -> dict:
    """Per-item arrays of `group` for rows (block which[d], row where[d]), concatenated row slices."""
    starts = [block.starts(count).tolist() for block in blocks] if len(blocks) > 1 else None
    if starts is None:  # one block: the offsets of just these rows
        first = np.take(blocks[0].starts(count), where)
        spans = [(0, lo, hi) for lo, hi in zip(first.tolist(), (first + np.take(blocks[0].arrays[count], where)).tolist())]
    else:
        spans = [(b, starts[b][r], starts[b][r + 1]) for b, r in zip(which.tolist(), where.tolist())]
    out = {}
    for name in group:
        arrays = [block.arrays[name] for block in blocks]
        pieces = [arrays[b][lo:hi] for b, lo, hi in spans]
        out[name] = np.concatenate(pieces) if pieces else arrays[0][:0].copy()
    return out


def _take_items(blocks: Sequence[RowBlock], which: np.ndarray, where: np.ndarray, group: dict, count: str) -> dict:
    """`_slice_items` by item indices: one take per block and array, then the items put in draw order."""
    lengths = np.zeros(len(where), dtype=np.int64)
    per_block = []
    for b, block in enumerate(blocks):
        mine = np.flatnonzero(which == b)
        starts = np.take(block.starts(count), where[mine])
        n = np.take(block.arrays[count], where[mine])
        lengths[mine] = n
        per_block.append((mine, _ranges(starts, n)))
    out = {name: [] for name in group}
    first = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # item offsets in the result
    for (_, index), block in zip(per_block, blocks):
        for name in group:
            out[name].append(np.take(block.arrays[name], index, axis=0))
    if len(blocks) == 1:
        return {name: values[0] for name, values in out.items()}
    slots = np.concatenate([_ranges(first[mine], lengths[mine]) for mine, _ in per_block])
    result = {}
    for name, values in out.items():
        merged = np.concatenate(values)
        placed = np.empty_like(merged)
        placed[slots] = merged
        result[name] = placed
    return result


def gather(parts: Sequence[tuple[RowBlock, np.ndarray]], tasks, order: np.ndarray | None = None) -> Batch:
    """The Batch of `gather_rows(parts, order)`; tasks: task id per graph (a scalar or (B,))."""
    return to_batch(gather_rows(parts, order), tasks)


def build_batch(table: pa.Table, cutoff, max_neighbors, tasks=0, tie_rule: str = "strict",
                where: str = "rows") -> Batch:
    """`collate(table.to_pylist(), cutoff, max_neighbors, tasks)` by the columnar path (checked on the way)."""
    block = decode_rows(table, cutoff, max_neighbors, tie_rule, where)
    return gather([(block, np.arange(block.num_rows))], tasks)


def to_batch(block: RowBlock, tasks) -> Batch:
    """The PyG Batch of all rows of `block` (which owns its arrays: tensors share their memory)."""
    arrays, system_ids = batch_arrays(block, tasks)
    return assemble({name: torch.from_numpy(a) for name, a in arrays.items()}, system_ids)


def batch_arrays(block: RowBlock, tasks) -> tuple[dict[str, np.ndarray], list[str]]:
    """Every tensor field of the batch of `block`'s rows as a numpy array in its final dtype and shape
    (`ref_pos` is made by `assemble`), plus `nkept`/`ncand` edge counts per graph; and the system ids."""
    a = block.arrays
    rows = block.num_rows
    atom_start = block.starts("natoms")
    cand_offset, kept_offset = np.repeat(atom_start[:-1], a["ncand"]), np.repeat(atom_start[:-1], a["nkept"])
    arrays = {
        "z": a["z"].astype(np.int64),
        "pos": a["pos"],
        "edge_index": np.stack([a["kept_src"] + kept_offset, a["kept_dst"] + kept_offset]),
        "shifts": a["kept_shift"].astype(np.float32),
        "cand_edge_index": np.stack([a["cand_src"] + cand_offset, a["cand_dst"] + cand_offset]),
        "cand_shifts": a["cand_shift"].astype(np.float32),
        "cell": a["cell"].reshape(rows, 3, 3),
        "pbc": a["pbc"],
        "energy": a["energy"],
        "has_energy": a["has_energy"],
        "forces": a["forces"],
        "has_forces": a["has_forces"],
        "stress": a["stress"].reshape(rows, 3, 3),
        "has_stress": a["has_stress"],
        "fixed": a["fixed"],
        "tags": a["tags"].astype(np.int64),
        "is_md": a["is_md"],
        "task": np.broadcast_to(np.asarray(tasks, dtype=np.int64), (rows,)).copy(),
        "natoms": a["natoms"],
        "cutoff": a["cutoff"].astype(np.float32),
        "max_neighbors": a["max_neighbors"],
        "nkept": a["nkept"], "ncand": a["ncand"],
    }
    sid_offsets = block.starts("nsid").astype(np.int32)
    system_ids = pa.StringArray.from_buffers(rows, pa.py_buffer(sid_offsets), pa.py_buffer(a["sid"])).to_pylist()
    return arrays, system_ids


@functools.cache
def _data_batch() -> type:
    """PyG's `DataBatch` class (what `Batch.from_data_list` of `Data` objects returns)."""
    return type(Batch(_base_cls=Data))


def _offsets(counts: np.ndarray) -> np.ndarray:
    """(len(counts) + 1,) int64: 0, then the running sum of `counts`."""
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def assemble(tensors: dict[str, torch.Tensor], system_ids: list[str]) -> Batch:
    """A Batch equal to `Batch.from_data_list` of the per-structure graphs: fields, slices, increments.

    tensors: `batch_arrays`' arrays as tensors (per-graph `nkept`, `ncand` edge counts included).
    """
    natoms = tensors["natoms"].numpy()
    rows = len(natoms)
    fields = {**tensors, "ref_pos": tensors["pos"].clone(), "system_id": system_ids}
    batch = type.__call__(_data_batch())  # `Batch(_base_cls=...)` without its metaclass's signature inspection
    store = batch._store
    # Offsets in numpy (a microsecond per call, torch's small ops ten), written into the fresh store's
    # mapping directly (it has no cached keys to drop): what PyG's setters would store, in their order.
    atoms, kept, cand = (torch.from_numpy(_offsets(n)) for n in (natoms, tensors["nkept"].numpy(), tensors["ncand"].numpy()))
    store._mapping.update((name, fields[name]) for name in FIELD_ORDER)
    store.__dict__["_num_nodes"] = natoms.tolist()
    store._mapping.update(num_nodes=int(atoms[-1]), batch=torch.from_numpy(np.repeat(np.arange(rows), natoms)), ptr=atoms)
    per_graph = torch.from_numpy(np.arange(rows + 1))
    slices = dict.fromkeys(FIELD_ORDER, per_graph) | dict.fromkeys(PER_ATOM, atoms)
    slices |= {"edge_index": kept, "shifts": kept, "cand_edge_index": cand, "cand_shifts": cand}
    zeros = torch.from_numpy(np.zeros(rows, dtype=np.int64))
    incs = dict.fromkeys(FIELD_ORDER, zeros) | {"edge_index": atoms[:-1], "cand_edge_index": atoms[:-1], "system_id": None}
    batch._slice_dict, batch._inc_dict, batch._num_graphs = slices, incs, rows
    return batch
