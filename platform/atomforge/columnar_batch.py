"""Columnar batches: rows of decoded `RowBlock`s -> model-ready PyG batches, by offsets.

The loader's builders gather each batch's rows from decoded windows (`atomforge.columnar` decodes
them) and assemble a Batch with exactly the fields, dtypes, values and PyG slices of
`atomforge.batch.collate` on the same rows (`batch.py` documents the fields), with no per-row
Python object: `gather_rows` copies each row's atoms, candidates, kept edges and id bytes as slices
of its block (index arithmetic on the offsets for many rows), `batch_arrays` makes every field's
array in its final dtype, and `assemble` wraps them, as tensors (possibly views of a worker's
shared slot), in a Batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch
from torch_geometric.data import Batch, Data

from atomforge.columnar import GROUPS, ROW, RowBlock, decode_rows, item_ranges

# Batch fields in the order `batch.structure_data` creates them (PyG keeps insertion order).
FIELD_ORDER = ("z", "pos", "ref_pos", "edge_index", "shifts", "cand_edge_index", "cand_shifts", "cell", "pbc",
               "energy", "has_energy", "forces", "has_forces", "stress", "has_stress", "fixed", "tags", "is_md",
               "task", "natoms", "cutoff", "max_neighbors", "system_id")
PER_ATOM = ("z", "pos", "ref_pos", "forces", "fixed", "tags")
SLICE_ROWS = 256  # rows gathered by slices at most (see `gather_rows`)


def take_rows(block: RowBlock, rows: np.ndarray) -> RowBlock:
    """A new RowBlock (own, writable arrays) holding `rows` of `block` in that order."""
    return gather_rows([(block, rows)])


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
    picks = [(0, where)] if len(blocks) == 1 else [(i, where[which == i]) for i in range(len(blocks))]
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
        per_block.append((mine, item_ranges(starts, n)))
    out = {name: [] for name in group}
    first = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # item offsets in the result
    for (_, index), block in zip(per_block, blocks):
        for name in group:
            out[name].append(np.take(block.arrays[name], index, axis=0))
    if len(blocks) == 1:
        return {name: values[0] for name, values in out.items()}
    slots = np.concatenate([item_ranges(first[mine], lengths[mine]) for mine, _ in per_block])
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
    arrays = {
        "z": a["z"].astype(np.int64),
        "pos": a["pos"],
        "edge_index": _edge_index(a["kept_src"], a["kept_dst"], np.repeat(atom_start[:-1], a["nkept"])),
        "shifts": a["kept_shift"].astype(np.float32),
        "cand_edge_index": _edge_index(a["cand_src"], a["cand_dst"], np.repeat(atom_start[:-1], a["ncand"])),
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
        "task": np.empty(rows, dtype=np.int64),
        "natoms": a["natoms"],
        "cutoff": a["cutoff"].astype(np.float32),
        "max_neighbors": a["max_neighbors"],
        "nkept": a["nkept"], "ncand": a["ncand"],
    }
    arrays["task"][:] = tasks  # one id for all graphs, or one per graph
    ids, bounds = a["sid"].tobytes(), block.starts("nsid").tolist()
    system_ids = [ids[lo:hi].decode() for lo, hi in zip(bounds[:-1], bounds[1:])]  # UTF-8 bytes per row
    return arrays, system_ids


def _edge_index(src: np.ndarray, dst: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """(2, E) int64 [src; dst] + offset (local indices made batch-global), written in place."""
    out = np.empty((2, len(src)), dtype=np.int64)
    np.add(src, offset, out=out[0])
    np.add(dst, offset, out=out[1])
    return out


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
