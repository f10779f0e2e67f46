"""Columnar decoding: Arrow shard rows -> `RowBlock`s of numpy columns, checked and re-filtered.

The first half of the loader's hot path (`atomforge.columnar_batch` is the second), with no
per-row Python object:
- `decode_rows` turns an Arrow table of shard rows (one window of a stream) into a `RowBlock`:
  every field taken from its column's values buffer (list offsets = cumulative `num_atoms` and
  `num_edges`), null labels filled as `collate` fills them, and the stored Verlet candidates
  re-filtered at the row's cutoff and K for all rows at once (`keep_edges`). It also runs the read
  path's guard, `check_table`: offsets agree with the counts, edge indices lie inside their
  structure, positions are finite; a failure is a ValueError naming the shard, the row and the field.
  `decode_columns` and `refilter_block` are its two halves: a window's chunks are decoded, joined
  by `concat_blocks`, and re-filtered once. `atomforge.columnar_batch` gathers batches from the blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

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
# Candidates re-filtered at once: the float64 temporaries (8 bytes per candidate each) stay in cache and
# are reused by the allocator; 16x larger chunks ran ~15% slower per structure, mostly in page faults.
REFILTER_EDGES = 1 << 16
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
    """A column as one array: a row group's single chunk as it is (combine_chunks would copy it)."""
    column = table.column(name)
    if not isinstance(column, pa.ChunkedArray):
        return column
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


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


def check_table(table: pa.Table, where: str, first_row: int = 0) -> dict[str, pa.Array]:
    """The loader's columns of `table` as arrays, once checked; a ValueError naming `where` (the shard),
    the row and the field where the columns disagree.

    Offsets only (no values): column types, list lengths against num_atoms / num_edges, and a stored
    graph on every row. `decode_rows` checks the values it extracts (indices, elements, finiteness).
    """
    for name in COLUMNS:
        expected = ARROW_SCHEMA.field(name).type
        got = table.schema.field(name).type if name in table.column_names else "missing"
        if got != expected:
            raise ValueError(f"{where}: column {name!r} is {got}, the shard schema says {expected}")
    columns = {name: _array(table, name) for name in COLUMNS}
    natoms = columns["num_atoms"].to_numpy().astype(np.int64)
    nedges = columns["num_edges"].to_numpy().astype(np.int64)
    for name, per, counts, what in (("atomic_numbers", 1, natoms, "num_atoms"), ("positions", 3, natoms, "num_atoms"),
                                    ("forces", 3, natoms, "num_atoms"), ("fixed", 1, natoms, "num_atoms"),
                                    ("tags", 1, natoms, "num_atoms"), ("edge_src", 1, nedges, "num_edges"),
                                    ("edge_dst", 1, nedges, "num_edges"), ("edge_shift", 3, nedges, "num_edges")):
        array = columns[name]
        valid = _valid(array)
        if name.startswith("edge_") and not valid.all():
            _fail(table, where, first_row, ~valid, name, "is null: the shard has no stored graph (preprocess with a cutoff)")
        bad = valid & (_lengths_of(array) != per * counts)
        if bad.any():
            _fail(table, where, first_row, bad, name, f"has a length that disagrees with {what}")
    return columns


def _check_values(table: pa.Table, where: str, first_row: int, a: dict[str, np.ndarray]) -> None:
    """Edge indices inside their structure, atomic numbers in 1..118, finite positions (vectorised)."""
    edge_start = np.concatenate([[0], np.cumsum(a["ncand"])])
    for name in ("cand_src", "cand_dst"):
        bad = _largest(a[name].view(np.uint32), edge_start) >= a["natoms"]  # negative int32 -> >= 2**31: caught too
        if bad.any():
            _fail(table, where, first_row, bad, name.replace("cand_", "edge_"), "points outside its structure")
    bad_z = (a["z"] < 1) | (a["z"] > MAX_ATOMIC_NUMBER)
    if bad_z.any():
        _fail(table, where, first_row, _rows_of(bad_z, a["natoms"]), "atomic_numbers",
              f"has values outside 1..{MAX_ATOMIC_NUMBER}")
    finite = np.isfinite(a["pos"]).all(axis=1)
    if not finite.all():
        _fail(table, where, first_row, _rows_of(~finite, a["natoms"]), "positions", "contains NaN or inf")


def _largest(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(rows,) the largest of each row's values (row r's are values[starts[r]:starts[r + 1]]; 0 if none)."""
    out = np.zeros(len(starts) - 1, dtype=values.dtype)
    filled = starts[1:] > starts[:-1]
    if filled.any():  # reduceat over the non-empty rows' starts: each runs to the next one's start
        out[filled] = np.maximum.reduceat(values, starts[:-1][filled])
    return out


def _rows_of(bad_items: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(rows,) True for rows with a bad item (items concatenated over rows, `counts` per row)."""
    return np.bincount(np.repeat(np.arange(len(counts)), counts)[bad_items], minlength=len(counts)) > 0


def decode_rows(table: pa.Table, cutoff, max_neighbors, tie_rule: str = "strict", where: str = "rows",
                first_row: int = 0) -> RowBlock:
    """A RowBlock of `table`'s rows with edges re-filtered at `cutoff` Å and K, checked on the way.

    cutoff and max_neighbors (-1 or None = no limit) are scalars or one per row; `where` (the shard)
    and `first_row` (its first row's index there) name the row in errors.
    """
    return refilter_block(decode_columns(table, cutoff, max_neighbors, where, first_row), tie_rule)


def decode_columns(table: pa.Table, cutoff, max_neighbors, where: str = "rows", first_row: int = 0) -> RowBlock:
    """`decode_rows` without the re-filter: the checked rows, their candidates and cutoff and K (no
    KEPT arrays yet). A window's chunks are decoded so, joined, and re-filtered once (`refilter_block`)."""
    columns = check_table(table, where, first_row)
    rows = table.num_rows
    natoms = columns["num_atoms"].to_numpy().astype(np.int64)
    ncand = columns["num_edges"].to_numpy().astype(np.int64)
    energy = columns["energy"]
    forces, has_forces = _per_atom(columns["forces"], natoms, 3, np.float32, 0.0)
    stress, has_stress = _fixed_rows(columns["stress"], 9, np.float32)
    sid = columns["system_id"].cast(pa.string())
    sid_offsets = np.frombuffer(sid.buffers()[1], dtype=np.int32)[sid.offset:sid.offset + rows + 1].astype(np.int64)
    limit = -1 if max_neighbors is None else max_neighbors
    arrays = {
        "natoms": natoms, "ncand": ncand,
        "nsid": np.diff(sid_offsets),
        "energy": np.asarray(energy.to_numpy(zero_copy_only=False), dtype=np.float64),  # null -> NaN
        "has_energy": _valid(energy), "has_forces": has_forces, "has_stress": has_stress,
        "is_md": np.asarray(pc.equal(columns["frame_kind"], "md").to_numpy(zero_copy_only=False), dtype=bool),
        "cell": _fixed_rows(columns["cell"], 9, np.float32)[0],
        "pbc": _fixed_rows(columns["pbc"], 3, bool)[0],
        "stress": stress,
        "cutoff": np.broadcast_to(np.asarray(cutoff, dtype=np.float64), (rows,)).copy(),
        "max_neighbors": np.broadcast_to(np.asarray(limit, dtype=np.int64), (rows,)).copy(),
        "z": _values(columns["atomic_numbers"], np.uint8),
        "pos": _values(columns["positions"], np.float32).reshape(-1, 3),
        "forces": forces,
        "fixed": _per_atom(columns["fixed"], natoms, 1, bool, False)[0].reshape(-1),
        "tags": _per_atom(columns["tags"], natoms, 1, np.int8, -1)[0].reshape(-1),
        "cand_src": _values(columns["edge_src"], np.int32),
        "cand_dst": _values(columns["edge_dst"], np.int32),
        "cand_shift": _values(columns["edge_shift"], np.int8).reshape(-1, 3),
        "sid": np.frombuffer(sid.buffers()[2], dtype=np.uint8)[sid_offsets[0]:sid_offsets[-1]].copy(),
    }
    _check_values(table, where, first_row, arrays)
    return RowBlock(arrays)


def refilter_block(block: RowBlock, tie_rule: str = "strict") -> RowBlock:
    """`block` (from `decode_columns`) with its KEPT arrays and nkept: the candidates re-filtered at
    each row's cutoff and K, REFILTER_EDGES at a time."""
    kept = [_kept(block, lo, hi, tie_rule) for lo, hi in _chunks(block.starts("ncand"), REFILTER_EDGES)]
    for name in (*KEPT, "nkept"):
        block.arrays[name] = kept[0][name] if len(kept) == 1 else np.concatenate([k[name] for k in kept])
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
    edge_index = np.empty((2, e1 - e0), dtype=np.int64)
    np.add(a["cand_src"][e0:e1], offset, out=edge_index[0])
    np.add(a["cand_dst"][e0:e1], offset, out=edge_index[1])
    pos = a["pos"][atom_start[lo]:atom_start[hi]]
    keep = keep_edges(pos, a["cell"][lo:hi].reshape(-1, 3, 3), edge_index, a["cand_shift"][e0:e1], edge_row,
                      a["cutoff"][lo:hi], a["max_neighbors"][lo:hi], tie_rule)
    # np.take, not fancy indexing: for the (E, 3) shifts it is ~4x faster. Kept edges come row after
    # row (grouped by dst, whose indices grow with the row), so each row's count is a binary search.
    return {"kept_src": np.take(a["cand_src"][e0:e1], keep), "kept_dst": np.take(a["cand_dst"][e0:e1], keep),
            "kept_shift": np.take(a["cand_shift"][e0:e1], keep, axis=0),
            "nkept": np.diff(np.searchsorted(keep, cand_start[lo:hi + 1] - e0))}


def _lengths(positions, cells, edge_index, shifts, edge_graph) -> np.ndarray:
    """`graph.edge_lengths` with one cell per graph, bit for bit: the same float64 operations in the same
    order, one Cartesian component at a time (1-D takes are several times faster than row gathers).

    The image offset `shift @ cell` takes few values: one per (graph, shift), and shifts span a few
    integers. So it is computed once per graph for every shift in the block's range (the same float64
    operations as per edge, hence the same bits) and gathered by a (graph, shift) code: three takes per
    edge instead of nine, and no per-edge products. Blocks whose shift range would make that table
    large fall back to the per-edge products. Indices must lie inside `positions` (`decode_columns`
    checks them): the gathers clip, they do not raise.
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
        code = np.multiply(edge_graph, span**3, dtype=np.int64)  # + ((s0 - low) * span + s1 - low) * span + s2 - low:
        code += shifts[:, 0] * np.int64(span * span)
        code += shifts[:, 1] * np.int64(span)
        code += shifts[:, 2]
        code -= low * (span * span + span + 1)
        offsets = None  # gathered per component below
    else:
        cell = np.ascontiguousarray(cells.transpose(1, 2, 0), dtype=np.float64)  # (row, component, graph)
        image = np.ascontiguousarray(shifts.T, dtype=np.float64)  # (3, E)
        offsets = [image[0] * np.take(cell[0, k], edge_graph) + image[1] * np.take(cell[1, k], edge_graph)
                   + image[2] * np.take(cell[2, k], edge_graph) for k in range(3)]
    # v = pos[src] + offset - pos[dst] and squared = v0² + v1² + v2² as written, into three arrays reused
    # for every component: fresh temporaries of this size cost more in page faults than in arithmetic.
    # take(mode="clip") writes into `out` directly ("raise" buffers it); every index is in range.
    squared, v, other = np.empty(len(src)), np.empty(len(src)), np.empty(len(src))
    for k in range(3):
        np.take(pos[k], src, out=v, mode="clip")
        v += np.take(table[k], code, out=other, mode="clip") if offsets is None else offsets[k]
        v -= np.take(pos[k], dst, out=other, mode="clip")
        if k == 0:
            np.multiply(v, v, out=squared)
        else:
            v *= v
            squared += v
    return np.sqrt(squared, out=squared)


def keep_edges(positions: np.ndarray, cells: np.ndarray, edge_index: np.ndarray, shifts: np.ndarray,
               edge_graph: np.ndarray, cutoff: np.ndarray, max_neighbors: np.ndarray, tie_rule: str) -> np.ndarray:
    """`graph.refilter` for many structures at once, each with its cutoff and K: kept candidates, in build order.

    positions (N, 3) Å; cells (B, 3, 3) Å (any values where not periodic: shifts are zero there);
    edge_index (2, E) [src, dst] over all N atoms; shifts (E, 3) integer images; edge_graph (E,) the
    structure of each edge; cutoff (B,) Å; max_neighbors (B,), -1 = no limit. Stored candidates are
    in (dst, distance, src, shift) order, so `refilter`'s two stable sorts are skipped when the
    recomputed distances keep that order (checked; otherwise the same sorts run). Edge indices must
    lie in 0..N-1 (`decode_columns` checks them): the distance gathers clip rather than raise.
    """
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie_rule must be one of {TIE_RULES}, got {tie_rule!r}")
    distance = _lengths(positions, cells, edge_index, shifts, edge_graph)
    within = np.flatnonzero(distance <= _per_edge(cutoff, np.float64, edge_graph))
    dst = np.take(edge_index[1], within)
    new_atom = np.ones(len(within), dtype=bool)
    new_atom[1:] = dst[1:] != dst[:-1]
    if (dst[1:] < dst[:-1]).any() or _misordered(np.take(distance, within), new_atom):
        by_distance = torch.sort(torch.from_numpy(_rounded(distance[within])), stable=True).indices
        order = by_distance[torch.sort(torch.from_numpy(dst)[by_distance], stable=True).indices].numpy()
        within, dst = within[order], dst[order]
        new_atom[1:] = dst[1:] != dst[:-1]
    limit = _per_edge(max_neighbors, np.int64, edge_graph, within)
    unlimited = limit < 0
    if unlimited.all():
        return within
    if tie_rule == "strict" and np.ndim(limit) == 0:  # one K for all (the usual case): by runs, not ranks
        kept = _first_of_runs(new_atom, int(limit))
        return within if kept is None else within[kept]
    index = np.arange(len(within))
    rank = index - np.maximum.accumulate(np.where(new_atom, index, 0))  # place in its dst's list
    if tie_rule == "strict":
        return within[unlimited | (rank < limit)]
    kth = np.full(positions.shape[0], np.inf)
    at_k = rank == limit - 1
    kth[dst[at_k]] = distance[within[at_k]]
    return within[unlimited | (distance[within] <= kth[dst] + TOLERANT_TIE)]


def _first_of_runs(new_atom: np.ndarray, k: int) -> np.ndarray | None:
    """Mask of the entries among the first k of their run (a run starts where new_atom), or None
    when every run has at most k; the work is per run and per dropped entry, not per entry."""
    starts = np.flatnonzero(new_atom)
    lengths = np.diff(np.append(starts, len(new_atom)))
    over = lengths > k
    if not over.any():
        return None
    kept = np.ones(len(new_atom), dtype=bool)
    kept[item_ranges(starts[over] + k, lengths[over] - k)] = False
    return kept


def item_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated arange(s, s + n) for every (s, n): the item indices of some rows."""
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(starts - (ends - lengths), lengths)


def _rounded(distance: np.ndarray) -> np.ndarray:
    return torch.round(torch.from_numpy(distance), decimals=TIE_DECIMALS).numpy()  # as refilter rounds


def _misordered(distance: np.ndarray, new_atom: np.ndarray) -> bool:
    """Whether a candidate's rounded distance is below the one before it in the same atom's list.

    Rounding is monotone, so only the pairs whose distances descend can descend once rounded:
    just those are rounded (in crystals, ties; often none).
    """
    pair = np.flatnonzero(~new_atom[1:] & (distance[1:] < distance[:-1]))
    if len(pair) == 0:
        return False
    return bool((_rounded(distance[pair + 1]) < _rounded(distance[pair])).any())


def _per_edge(values, dtype, edge_graph: np.ndarray, edges: np.ndarray | None = None) -> np.ndarray:
    """A per-graph value for every edge (of `edges`, default all), as one scalar when all graphs share it
    (the usual case: one cutoff and K per source), sparing a take and a per-edge array."""
    values = np.asarray(values, dtype=dtype)
    if values.size and (values == values.flat[0]).all():
        return values.flat[0]
    return np.take(values, edge_graph if edges is None else edge_graph[edges])


def concat_blocks(blocks: Sequence[RowBlock]) -> RowBlock:
    """The rows of several blocks, one after the other."""
    return RowBlock({name: np.concatenate([b.arrays[name] for b in blocks]) for name in blocks[0].arrays})
