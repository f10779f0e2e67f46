"""Neighbor graphs against ASE's neighbor_list; nearest-K tie rules; Verlet re-filtering."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule
from ase.neighborlist import neighbor_list
from atomforge.graph import (
    _radius_pairs,
    closest_pair,
    edge_vectors,
    needs_rebuild,
    neighbor_graph,
    refilter,
    search_graph,
)
from atomforge.schema import MIN_DISTANCE, from_ase


def edge_set(src, dst, shifts):
    return set(zip(np.asarray(src).tolist(), np.asarray(dst).tolist(), map(tuple, np.asarray(shifts).tolist())))


def ase_reference(atoms: Atoms, cutoff: float):
    a = atoms.copy()
    a.positions = a.positions.astype(np.float32).astype(np.float64)
    i, j, shifts = neighbor_list("ijS", a, cutoff)
    return edge_set(j, i, shifts)  # ASE: vector = pos[j] - pos[i] + S @ cell, i.e. src=j, dst=i


def slab():
    s = fcc111("Pt", (3, 3, 4), vacuum=8.0)
    add_adsorbate(s, "O", 1.8, "fcc")
    s.pbc = [True, True, False]
    return s


def triclinic():
    b = bulk("Si", "diamond", a=5.43) * (2, 2, 2)
    b.set_cell(b.cell.array + np.random.default_rng(0).normal(0, 0.3, (3, 3)), scale_atoms=True)
    return b


def tiny_cell():
    b = bulk("Cu", "fcc", a=3.6)  # one atom, 2.5 Å cell vectors: a 12 Å sphere spans many images
    b.set_cell(b.cell.array + np.array([[0, 0.2, 0], [0, 0, 0.1], [0.1, 0, 0]]), scale_atoms=True)
    return b


def outside_cell():
    b = bulk("Al", "fcc", a=4.05, cubic=True) * (2, 2, 2)
    b.positions += np.array([9.1, -13.7, 4.4])  # atoms far outside the unit cell
    return b


def wire():
    """Periodic along z only, with zero vectors on the other axes."""
    atoms = Atoms("C4", positions=[[0, 0, 0], [1.2, 0.3, 1.1], [0.1, 1.3, 2.2], [-0.9, 0.4, 3.4]],
                  cell=[[0, 0, 0], [0, 0, 0], [0, 0, 4.6]], pbc=[False, False, True])
    return atoms


def flat_slab():
    """pbc (T, T, F) with a zero third cell vector."""
    s = slab()
    s.cell[2] = 0.0
    return s


def rattled(atoms, seed=1, scale=0.15):
    a = atoms.copy()
    a.positions += np.random.default_rng(seed).normal(0, scale, a.positions.shape)
    return a


CASES = {
    "molecule": (molecule("CH3CH2OH"), 5.0),
    "slab_TTF": (slab(), 6.0),
    "slab_TTF_12A": (slab(), 12.0),
    "triclinic_bulk": (triclinic(), 6.0),
    "tiny_cell_12A": (tiny_cell(), 12.0),
    "outside_cell": (outside_cell(), 5.0),
    "wire_FFT": (wire(), 6.0),
    "slab_zero_c": (flat_slab(), 6.0),
    "perturbed_slab": (rattled(slab()), 6.0),
    "perturbed_triclinic": (rattled(triclinic()), 7.0),
}


@pytest.mark.parametrize("name", CASES)
def test_edges_equal_ase(name):
    atoms, cutoff = CASES[name]
    graph = neighbor_graph(from_ase(atoms, name), cutoff)
    assert edge_set(graph.edge_index[0], graph.edge_index[1], graph.shifts) == ase_reference(atoms, cutoff)


@pytest.mark.parametrize("name", CASES)
def test_device_search_gives_the_same_graph(name):
    """neighbor_graph(device=...) searches with vesin-torch (a GPU's CUDA kernel; here its CPU path):
    the same edges, in the same order, truncated alike, for every geometry above."""
    pytest.importorskip("vesin_torch", reason="vesin-torch not installed (pip install 'atomforge[gpu]')")
    atoms, cutoff = CASES[name]
    structure = from_ase(atoms, name)
    for k, skin in ((None, 0.0), (12, 0.5)):
        expected = neighbor_graph(structure, cutoff, k, skin=skin)
        got = neighbor_graph(structure, cutoff, k, skin=skin, device="cpu")
        assert np.array_equal(got.edge_index, expected.edge_index) and np.array_equal(got.shifts, expected.shifts)


def test_edge_vector_convention_and_order():
    atoms, cutoff = CASES["perturbed_triclinic"]
    s = from_ase(atoms, "t")
    g = neighbor_graph(s, cutoff)
    vec = edge_vectors(s.positions, s.cell, g.edge_index, g.shifts)
    a = atoms.copy()
    a.positions = s.positions.astype(np.float32).astype(np.float64)
    i, j, S, D = neighbor_list("ijSD", a, cutoff)
    reference = {(int(jj), int(ii), tuple(ss)): d for ii, jj, ss, d in zip(i, j, S.tolist(), D)}
    mine = {(int(a_), int(b_), tuple(ss)): v for a_, b_, ss, v in zip(g.edge_index[0], g.edge_index[1], g.shifts.tolist(), vec)}
    assert mine.keys() == reference.keys()
    np.testing.assert_allclose(np.array([mine[k] for k in reference]), np.array(list(reference.values())), atol=1e-5)
    dist = np.linalg.norm(vec, axis=1)
    dst = g.edge_index[1]
    assert (np.diff(dst) >= 0).all()
    same = np.diff(dst) == 0
    assert (np.diff(dist)[same] >= 0).all()


def test_isolated_atom_has_no_edges():
    atoms = Atoms("HeNe", positions=[[0, 0, 0], [20, 0, 0]])
    g = neighbor_graph(from_ase(atoms, "iso"), 5.0)
    assert g.num_edges == 0 and g.edge_index.shape == (2, 0) and g.shifts.shape == (0, 3)


def test_strict_truncation_keeps_k_nearest_with_documented_ties():
    # fcc: 12 nearest neighbors at exactly the same distance; K=8 must cut inside the tie.
    # a = 4.0 Å keeps every coordinate exact in float32, so the ties are exact.
    b = bulk("Cu", "fcc", a=4.0, cubic=True) * (2, 2, 2)
    s = from_ase(b, "fcc")
    full = neighbor_graph(s, 3.0)
    assert np.all(np.bincount(full.edge_index[1]) == 12)
    g = neighbor_graph(s, 3.0, max_neighbors=8)
    assert np.all(np.bincount(g.edge_index[1]) == 8)
    for atom in range(len(b)):
        mine = full.edge_index[1] == atom
        candidates = sorted(zip(full.edge_index[0][mine].tolist(), map(tuple, full.shifts[mine].tolist())))
        kept = sorted(zip(g.edge_index[0][g.edge_index[1] == atom].tolist(), map(tuple, g.shifts[g.edge_index[1] == atom].tolist())))
        assert kept == candidates[:8]  # ties: lower src first, then lexicographic shift


def test_tolerant_truncation_keeps_whole_tied_shell():
    b = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    g = neighbor_graph(from_ase(b, "fcc"), 4.0, max_neighbors=8, tie_rule="tolerant")
    assert np.all(np.bincount(g.edge_index[1]) == 12)


def test_truncation_on_rattled_structure_keeps_nearest():
    atoms = rattled(slab(), seed=3)
    s = from_ase(atoms, "r")
    full = neighbor_graph(s, 8.0)
    g = neighbor_graph(s, 8.0, max_neighbors=10)
    d_full = np.linalg.norm(edge_vectors(s.positions, s.cell, full.edge_index, full.shifts), axis=1)
    d_g = np.linalg.norm(edge_vectors(s.positions, s.cell, g.edge_index, g.shifts), axis=1)
    for atom in range(len(atoms)):
        expected = np.sort(d_full[full.edge_index[1] == atom])[:10]
        np.testing.assert_allclose(np.sort(d_g[g.edge_index[1] == atom]), expected)


def tensors(s, graph):
    cell = torch.as_tensor(s.cell) if s.pbc.any() else None
    return (torch.as_tensor(s.positions.astype(np.float32)), cell, torch.as_tensor(graph.edge_index), torch.as_tensor(graph.shifts))


@pytest.mark.parametrize("name", ["slab_TTF", "triclinic_bulk", "molecule", "tiny_cell_12A"])
def test_refilter_equals_fresh_build_within_half_skin(name):
    atoms, cutoff = CASES[name]
    skin, k, k_store = 1.0, 12, 40
    s = from_ase(atoms, name)
    stored = neighbor_graph(s, cutoff, max_neighbors=k_store, skin=skin)
    pos0, cell, ei, sh = tensors(s, stored)
    rng = np.random.default_rng(7)
    step = rng.normal(size=s.positions.shape)
    step *= 0.49 * skin / np.linalg.norm(step, axis=1, keepdims=True)  # every atom moves < skin/2
    moved = s.replace(positions=s.positions.astype(np.float32) + step)
    pos1 = torch.as_tensor(moved.positions.astype(np.float32))
    for positions, structure in ((pos0, s), (pos1, moved)):
        for kk in (k, k_store):
            keep = refilter(positions, cell, ei, sh, cutoff, kk)
            fresh = neighbor_graph(structure, cutoff, max_neighbors=kk)
            rebuild = needs_rebuild(pos0, positions, cell, ei, sh, cutoff, skin, k_store, kk)
            if not rebuild:
                np.testing.assert_array_equal(ei[:, keep].numpy(), fresh.edge_index)
                np.testing.assert_array_equal(sh[keep].numpy(), fresh.shifts)
            assert positions is pos1 or not rebuild  # unmoved positions never need a rebuild


def test_rebuild_detected_beyond_half_skin():
    atoms, cutoff = CASES["perturbed_slab"]
    s = from_ase(atoms, "p")
    stored = neighbor_graph(s, cutoff, skin=0.5)
    pos0, cell, ei, sh = tensors(s, stored)
    moved = pos0.clone()
    moved[3] += torch.tensor([0.0, 0.0, 0.3])
    assert needs_rebuild(pos0, moved, cell, ei, sh, cutoff, 0.5, None)
    moved[3] = pos0[3] + torch.tensor([0.0, 0.0, 0.2])
    assert not needs_rebuild(pos0, moved, cell, ei, sh, cutoff, 0.5, None)


def test_refilter_needs_k_within_k_store():
    s = from_ase(CASES["slab_TTF"][0], "s")
    stored = neighbor_graph(s, 6.0, max_neighbors=20, skin=1.0)
    pos0, cell, ei, sh = tensors(s, stored)
    with pytest.raises(ValueError, match="K_store >= K"):
        needs_rebuild(pos0, pos0, cell, ei, sh, 6.0, 1.0, 20, None)
    with pytest.raises(ValueError, match="K_store >= K"):
        needs_rebuild(pos0, pos0, cell, ei, sh, 6.0, 1.0, 20, 30)


def test_rebuild_detected_when_truncation_could_change():
    # A K_store barely above K with a real move: the check must flag atoms that could lose a neighbor.
    atoms = rattled(bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2), seed=5, scale=0.05)
    s = from_ase(atoms, "k")
    stored = neighbor_graph(s, 6.0, max_neighbors=13, skin=1.0)
    pos0, cell, ei, sh = tensors(s, stored)
    moved = pos0 + 0.3 * torch.randn(pos0.shape, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    assert needs_rebuild(pos0, moved, cell, ei, sh, 6.0, 1.0, 13, 12)


def reference_order(atoms: Atoms, radius: float, k: int | None):
    """The documented order by definition, from ASE's pairs: (dst, d rounded 1e-8, src, shift), first K per dst."""
    a = atoms.copy()
    a.positions = a.positions.astype(np.float32).astype(np.float64)
    i, j, shifts, d = neighbor_list("ijSd", a, radius)
    rows = sorted(zip(i.tolist(), np.round(d, 8).tolist(), j.tolist(), map(tuple, shifts.tolist())))
    kept, count = [], {}
    for dst, _, src, shift in rows:
        count[dst] = count.get(dst, 0) + 1
        if k is None or count[dst] <= k:
            kept.append((src, dst, shift))
    return kept


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("k", [None, 1, 7, 40])
def test_one_search_graph_is_the_documented_order(name, k):
    atoms, cutoff = CASES[name]
    s = from_ase(atoms, name)
    search = search_graph(s.positions, s.cell, s.pbc, cutoff, k)
    mine = list(zip(search.graph.edge_index[0].tolist(), search.graph.edge_index[1].tolist(),
                    map(tuple, search.graph.shifts.tolist())))
    assert mine == reference_order(atoms, cutoff, k)


def test_tie_heavy_fcc_orders_like_the_definition_at_every_k():
    b = bulk("Cu", "fcc", a=4.0, cubic=True) * (2, 2, 2)  # exact ties in float32 (see above)
    s = from_ase(b, "fcc")
    for k in range(1, 20):
        g = search_graph(s.positions, s.cell, s.pbc, 4.5, k).graph
        assert list(zip(g.edge_index[0].tolist(), g.edge_index[1].tolist(), map(tuple, g.shifts.tolist()))) \
            == reference_order(b, 4.5, k)


@pytest.mark.parametrize("name", CASES)
def test_search_distances_are_edge_vector_distances(name):
    atoms, cutoff = CASES[name]
    s = from_ase(atoms, name)
    positions = s.positions.astype(np.float32).astype(np.float64)
    src, dst, shifts, distance = _radius_pairs(positions, s.cell, s.pbc, cutoff)
    cell = s.cell if s.pbc.any() else None
    recomputed = np.linalg.norm(edge_vectors(positions, cell, (src, dst), shifts.astype(np.float64)), axis=1)
    np.testing.assert_allclose(distance, recomputed, rtol=0, atol=1e-12)  # the stored order's distances


@pytest.mark.parametrize("case", [
    (np.array([[0.01, 0, 0], [4.96, 0, 0]]), np.eye(3) * 5.0, [True, True, True]),  # through the boundary
    (np.array([[0.0, 0, 0], [0.03, 0.02, 0], [2.0, 2, 2]]), None, [False, False, False]),  # molecule
    (np.array([[0.0, 0, 0]]), np.diag([0.07, 5.0, 5.0]), [True, True, True]),  # an atom and its own image
    (np.array([[0.0, 0, 0], [1.5, 1.5, 1.5]]), np.eye(3) * 4.0, [True, True, True]),  # nothing close
])
def test_closest_pair_of_the_graph_search_equals_the_separate_search(case):
    positions, cell, pbc = case
    search = search_graph(positions, cell, pbc, 6.0, 30)
    separate = closest_pair(positions, cell, pbc, MIN_DISTANCE)
    seen = None if search.closest is None or search.closest[2] >= MIN_DISTANCE else search.closest
    if separate is None:
        assert seen is None
    else:
        # the graph search sees the positions as stored (float32), the separate one float64
        assert seen is not None and seen[2] == pytest.approx(separate[2], abs=1e-6)
        assert {seen[0], seen[1]} == {separate[0], separate[1]}
