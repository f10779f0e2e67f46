"""Batching rows and structures into PyG batches; re-graphing after corruption; atom budgets."""

import numpy as np
import torch
from ase.build import add_adsorbate, fcc100, molecule
from atomforge import atom_budget_batches, collate, neighbor_graph
from atomforge.batch import regraph
from atomforge.schema import from_ase, to_row


def structures():
    slab = fcc100("Ni", (2, 2, 3), vacuum=6.0)
    add_adsorbate(slab, "H", 1.2, "hollow")
    slab.pbc = [True, True, True]
    mol = molecule("CH3CH2OH")
    return [from_ase(slab, "slab", energy=-3.5), from_ase(mol, "mol", energy=-1.25, frame_kind="md")]


def test_rows_and_structures_collate_to_the_same_graphs():
    items = structures()
    rows = [to_row(s, neighbor_graph(s, [7.0, 5.0][i], max_neighbors=20, skin=1.0)) for i, s in enumerate(items)]
    b_struct = collate(items, cutoff=[7.0, 5.0], max_neighbors=12, tasks=[0, 1])
    b_rows = collate(rows, cutoff=[7.0, 5.0], max_neighbors=12, tasks=[0, 1])
    assert torch.equal(b_struct.edge_index, b_rows.edge_index)
    assert torch.equal(b_struct.shifts, b_rows.shifts)
    assert b_rows.task.tolist() == [0, 1] and b_rows.natoms.tolist() == [13, 9]
    assert b_rows.is_md.tolist() == [False, True]
    assert b_rows.energy.dtype == torch.float64 and b_rows.energy.tolist() == [-3.5, -1.25]
    # edges of graph 1 point at atoms of graph 1 (offset by the 13 atoms of graph 0)
    g1 = b_rows.batch[b_rows.edge_index[1]] == 1
    assert (b_rows.edge_index[:, g1] >= 13).all()
    assert b_rows.cand_edge_index.shape[1] > b_rows.edge_index.shape[1]


def test_regraph_after_corruption_equals_fresh_build():
    items = structures()
    skin, k_store, k = 1.0, 40, 12
    rows = [to_row(s, neighbor_graph(s, c, max_neighbors=k_store, skin=skin)) for s, c in zip(items, (7.0, 5.0))]
    batch = collate(rows, cutoff=[7.0, 5.0], max_neighbors=k)
    gen = torch.Generator().manual_seed(0)
    for scale in (0.1, 0.8):  # within skin/2, then far beyond it (forces a rebuild)
        noisy = batch.pos + scale * torch.randn(batch.pos.shape, generator=gen)
        edge_index, shifts = regraph(batch, noisy, skin, k_store)
        for g, (s, cutoff) in enumerate(zip(items, (7.0, 5.0))):
            atoms = (batch.batch == g).nonzero().squeeze(1)
            moved = s.replace(positions=noisy[atoms].numpy().astype(np.float64))
            fresh = neighbor_graph(moved, cutoff, max_neighbors=k)
            mine = batch.batch[edge_index[1]] == g
            got = sorted(zip((edge_index[0, mine] - atoms[0]).tolist(), (edge_index[1, mine] - atoms[0]).tolist(), map(tuple, shifts[mine].long().tolist())))
            want = sorted(zip(fresh.edge_index[0].tolist(), fresh.edge_index[1].tolist(), map(tuple, fresh.shifts.tolist())))
            assert got == want


def test_atom_budget_batches_respect_budget_and_keep_everything():
    sizes = [5, 30, 7, 7, 80, 2, 2, 2, 40]
    items = [{"num_atoms": n, "i": i} for i, n in enumerate(sizes)]
    batches = list(atom_budget_batches(items, max_atoms=40))
    assert [it["i"] for b in batches for it in b] == list(range(len(sizes)))
    for b in batches:
        total = sum(it["num_atoms"] for it in b)
        assert total <= 40 or len(b) == 1
    assert [len(b) for b in atom_budget_batches(items, max_atoms=1000, max_structures=4)] == [4, 4, 1]
