"""Columnar pieces: the batched re-filter equals `graph.refilter` per structure, in or out of stored order."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from atomforge.columnar import keep_edges
from atomforge.columnar_batch import take_rows
from atomforge.graph import neighbor_graph, refilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from varied_structures import CUTOFF, K_STORE, SKIN, varied  # noqa: E402


@pytest.mark.parametrize("noise,tie_rule,shared", [(0.0, "strict", False), (0.3, "strict", False),
                                                   (0.3, "tolerant", False), (0.3, "strict", True), (0.3, "tolerant", True)])
def test_keep_edges_equals_refilter_of_each_structure(noise, tie_rule, shared):
    """Per-structure cutoffs and K, or one shared by all (compared as scalars)."""
    rng = np.random.default_rng(0)
    structures = [varied(i) for i in range(8)]
    graphs = [neighbor_graph(s, CUTOFF, K_STORE, skin=SKIN) for s in structures]
    positions = [(s.positions + rng.normal(scale=noise, size=s.positions.shape)).astype(np.float32) for s in structures]
    cutoffs, limits = rng.uniform(3.0, CUTOFF, len(structures)), rng.choice([-1, 4, 9], len(structures))
    if shared:
        cutoffs, limits = np.full(len(structures), 4.5), np.full(len(structures), 6)
    expected, offset, edge_offset = [], 0, 0
    for s, g, pos, cutoff, limit in zip(structures, graphs, positions, cutoffs, limits):
        cell = torch.as_tensor(s.cell, dtype=torch.float32) if s.pbc.any() else None
        kept = refilter(torch.from_numpy(pos), cell, torch.from_numpy(g.edge_index), torch.from_numpy(g.shifts).float(),
                        float(cutoff), None if limit < 0 else int(limit), tie_rule)
        expected.append(kept.numpy() + edge_offset)
        offset, edge_offset = offset + s.num_atoms, edge_offset + g.num_edges
    atom_start = np.cumsum([0] + [s.num_atoms for s in structures])
    edge_index = np.concatenate([g.edge_index + atom_start[i] for i, g in enumerate(graphs)], axis=1)
    cells = np.stack([np.zeros((3, 3)) if s.cell is None else s.cell for s in structures]).astype(np.float32)
    edge_graph = np.repeat(np.arange(len(graphs)), [g.num_edges for g in graphs])
    got = keep_edges(np.concatenate(positions), cells, edge_index, np.concatenate([g.shifts for g in graphs]),
                     edge_graph, cutoffs, limits, tie_rule)
    assert np.array_equal(got, np.concatenate(expected))


def test_take_rows_keeps_every_array_consistent():
    from atomforge.columnar import decode_rows
    from atomforge.schema import rows_to_table, to_row

    rows = [to_row(s, neighbor_graph(s, CUTOFF, K_STORE, skin=SKIN)) for s in (varied(i) for i in range(6))]
    block = decode_rows(rows_to_table(rows), CUTOFF, 12)
    picked = take_rows(block, np.array([4, 0, 4]))
    assert picked.num_rows == 3 and picked.arrays["natoms"].tolist() == block.arrays["natoms"][[4, 0, 4]].tolist()
    start = block.starts("natoms")
    assert np.array_equal(picked.arrays["pos"][: block.arrays["natoms"][4]], block.arrays["pos"][start[4]:start[5]])
    assert bytes(picked.arrays["sid"]).decode() == rows[4]["system_id"] + rows[0]["system_id"] + rows[4]["system_id"]


@pytest.mark.parametrize("slice_rows", [256, 0], ids=["slices", "item-indices"])
def test_gather_rows_from_two_blocks_in_any_order_equals_taking_from_their_concatenation(monkeypatch, slice_rows):
    """Both ways of gathering (row slices, item indices) give the rows of interleaved parts of two
    windows in draw order, every per-row, per-atom, per-edge and id array alike."""
    import atomforge.columnar_batch as columnar_batch
    from atomforge.columnar import decode_rows
    from atomforge.columnar_batch import gather_rows
    from atomforge.schema import rows_to_table, to_row

    monkeypatch.setattr(columnar_batch, "SLICE_ROWS", slice_rows)
    rows = [to_row(s, neighbor_graph(s, CUTOFF, K_STORE, skin=SKIN)) for s in (varied(i) for i in range(9))]
    first, second = decode_rows(rows_to_table(rows[:5]), CUTOFF, 12), decode_rows(rows_to_table(rows[5:]), CUTOFF, 12)
    parts, order = [(first, np.array([3, 0, 4])), (second, np.array([2, 0]))], np.array([3, 0, 4, 1, 2])
    got = gather_rows(parts, order)
    # concatenated rows 3, 0, 4 | 7, 5 in `order`: the block of rows 7, 3, 5, 0, 4 decoded afresh
    wanted = decode_rows(rows_to_table([rows[i] for i in (7, 3, 5, 0, 4)]), CUTOFF, 12)
    assert got.num_rows == 5 and set(got.arrays) == set(wanted.arrays)
    for name, array in wanted.arrays.items():
        assert np.array_equal(got.arrays[name], array, equal_nan=array.dtype.kind == "f"), name
    ids = bytes(got.arrays["sid"]).decode()
    assert ids == "".join(rows[i]["system_id"] for i in (7, 3, 5, 0, 4))


@pytest.mark.parametrize("table_entries", [1 << 20, 0], ids=["offset-table", "per-edge"])
def test_batched_lengths_equal_edge_lengths_bit_for_bit(monkeypatch, table_entries):
    """The loader's distances (both ways of computing image offsets) are `graph.edge_lengths`'s bits,
    on every kind of structure and on a small cell whose images reach two cells away."""
    import atomforge.columnar as columnar
    from ase.build import bulk
    from atomforge.graph import edge_lengths
    from atomforge.schema import Structure

    monkeypatch.setattr(columnar, "OFFSET_TABLE_ENTRIES", table_entries)
    small = bulk("Cu", "fcc", a=3.6)  # 1 atom, 2.5 Å primitive vectors: a 6.5 Å search reaches |shift| >= 2
    structures = [varied(i) for i in range(8)] + [Structure("small", small.numbers, small.positions, small.cell.array, small.pbc)]
    graphs = [neighbor_graph(s, CUTOFF, K_STORE, skin=SKIN) for s in structures]
    assert max(int(np.abs(g.shifts).max()) for g in graphs) >= 2
    positions = [s.positions.astype(np.float32) for s in structures]
    expected = [edge_lengths(p.astype(np.float64), None if not s.pbc.any() else np.asarray(s.cell, np.float32).astype(np.float64),
                             g.edge_index, g.shifts.astype(np.float64)) for s, g, p in zip(structures, graphs, positions)]
    atom_start = np.cumsum([0] + [s.num_atoms for s in structures])
    edge_index = np.concatenate([g.edge_index + atom_start[i] for i, g in enumerate(graphs)], axis=1)
    cells = np.stack([np.zeros((3, 3)) if s.cell is None else s.cell for s in structures]).astype(np.float32)
    edge_graph = np.repeat(np.arange(len(graphs)), [g.num_edges for g in graphs])
    got = columnar._lengths(np.concatenate(positions), cells, edge_index, np.concatenate([g.shifts for g in graphs]), edge_graph)
    assert np.array_equal(got.view(np.int64), np.concatenate(expected).view(np.int64))


def test_the_refilter_chunking_changes_no_edge(monkeypatch):
    """Re-filtering a window in chunks of any size keeps the same edges as in one piece (one row per chunk,
    a few rows, all rows)."""
    import atomforge.columnar as columnar
    from atomforge.schema import rows_to_table, to_row

    rows = [to_row(s, neighbor_graph(s, CUTOFF, K_STORE, skin=SKIN)) for s in (varied(i) for i in range(12))]
    table = rows_to_table(rows)
    kept = {}
    for size in (1, 150, 1 << 30):
        monkeypatch.setattr(columnar, "REFILTER_EDGES", size)
        block = columnar.decode_rows(table, CUTOFF - 0.7, 9, "tolerant")
        kept[size] = {name: block.arrays[name] for name in ("kept_src", "kept_dst", "kept_shift", "nkept")}
    assert len(columnar._chunks(block.starts("ncand"), 150)) > 3
    for size in (1, 150):
        for name, array in kept[1 << 30].items():
            assert np.array_equal(kept[size][name], array), (size, name)


@pytest.mark.parametrize("field,value", [("edge_src", None), ("edge_dst", -1)], ids=["past-its-atoms", "negative"])
def test_an_edge_index_outside_its_structure_names_its_row(field, value):
    """Checked per row (largest index against num_atoms), also around rows that have no edges."""
    from atomforge.columnar import decode_rows
    from atomforge.schema import rows_to_table, to_row

    rows = [to_row(s, neighbor_graph(s, CUTOFF, K_STORE, skin=SKIN)) for s in (varied(i) for i in range(6))]
    for empty in (1, 5):
        rows[empty].update(num_edges=0, edge_src=[], edge_dst=[], edge_shift=[])
    block = decode_rows(rows_to_table(rows), CUTOFF, 12)
    assert block.arrays["nkept"][[1, 5]].tolist() == [0, 0] and block.arrays["nkept"][[0, 2, 3, 4]].all()
    bad = np.array(rows[3][field])
    bad[-1] = rows[3]["num_atoms"] if value is None else value
    rows[3][field] = bad
    with pytest.raises(ValueError, match=rf"shard-x: row 3 \({rows[3]['system_id']}\): field '{field}' points outside"):
        decode_rows(rows_to_table(rows), CUTOFF, 12, where="shard-x")


def test_batch_system_ids_are_each_rows_id_also_beyond_ascii():
    """System ids are cut from the gathered UTF-8 bytes by byte offsets: a multi-byte id keeps its neighbours'."""
    from atomforge.columnar import decode_rows
    from atomforge.columnar_batch import gather
    from atomforge.schema import rows_to_table, to_row

    rows = [to_row(s, neighbor_graph(s, CUTOFF, K_STORE, skin=SKIN)) for s in (varied(i) for i in range(4))]
    rows[1]["system_id"], rows[2]["system_id"] = "Cu₂O/α-Å 1", "碳-2"
    batch = gather([(decode_rows(rows_to_table(rows), CUTOFF, 12), np.array([2, 1, 3, 0]))], tasks=0)
    assert batch.system_id == [rows[i]["system_id"] for i in (2, 1, 3, 0)]
