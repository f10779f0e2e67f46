"""GemNet-OC: sub-graphs derived from the given edges equal fresh builds, triplet / quadruplet indices equal
brute-force enumeration, the energy is continuous at each of its four cutoffs, JMP's parameter counts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from atomforge.batch import collate
from atomforge.graph import edge_vectors, neighbor_graph
from atomforge.models import MASK_Z, AtomisticModel
from atomforge.models.gemnet_oc import GemNetOCConfig
from atomforge.models.gemnet_oc.graphs import gemnet_graphs
from atomforge.models.gemnet_oc.layers import ScaleFactor
from atomforge.models.gemnet_oc.scaling import fit_scale_factors
from atomforge.models.inputs import ModelInputs
from atomforge.schema import Structure

TINY = GemNetOCConfig.tiny()


def derived(structure: Structure, config: GemNetOCConfig = TINY):
    """The model's graphs from the graph a loader would give it (the config's cutoff and K)."""
    stored = neighbor_graph(structure, config.cutoff, config.max_neighbors)
    pos = torch.as_tensor(np.asarray(structure.positions, dtype=np.float32).astype(np.float64))
    cell = None if structure.cell is None else torch.as_tensor(structure.cell, dtype=torch.float64)
    index, shifts = torch.as_tensor(stored.edge_index), torch.as_tensor(stored.shifts)
    vec = edge_vectors(pos, cell, index, shifts.double())
    return gemnet_graphs(index, vec, shifts, structure.num_atoms, config)


def edge_set(edges) -> set:
    return {(int(s), int(d), *map(int, sh)) for s, d, sh in zip(edges.src, edges.dst, edges.shift)}


def graph_set(graph) -> set:
    return {(int(s), int(d), *map(int, sh)) for (s, d), sh in zip(graph.edge_index.T, graph.shifts)}


def canonical(edge) -> bool:
    s, d, *shift = edge
    return s < d or (s == d and tuple(shift) > (0, 0, 0))


@pytest.mark.parametrize("name", ["slab", "cu_bulk", "ethanol"])
def test_subgraphs_equal_fresh_builds_at_their_cutoff_and_cap(kit, name):
    structure = kit.labelled(getattr(kit, name)(), name)
    g = derived(structure)
    for edges, cutoff, cap in ((g.atom, TINY.cutoff, TINY.max_neighbors),
                               (g.quad, TINY.cutoff_quad, TINY.max_neighbors_quad),
                               (g.atom_edge, TINY.cutoff_atom_edge, TINY.max_neighbors_atom_edge)):
        assert edge_set(edges) == graph_set(neighbor_graph(structure, cutoff, cap))
    # The main graph is symmetrised: a pair is in when its canonical direction survived the cap.
    fresh = {e for e in graph_set(neighbor_graph(structure, TINY.cutoff_main, TINY.max_neighbors_main)) if canonical(e)}
    mirrored = {(d, s, *(-x for x in shift)) for s, d, *shift in fresh}
    assert edge_set(g.main) == fresh | mirrored
    for e, r in enumerate(g.swap.tolist()):  # swap is the reverse edge
        assert (int(g.main.src[r]), int(g.main.dst[r])) == (int(g.main.dst[e]), int(g.main.src[e]))
        assert torch.equal(g.main.shift[r], -g.main.shift[e])


def images(edges) -> list[tuple[int, int, tuple[int, ...]]]:
    """(src, dst, shift) of each edge, as Python values."""
    return [(s, d, tuple(sh)) for s, d, sh in zip(edges.src.tolist(), edges.dst.tolist(), edges.shift.tolist())]


def brute_triplets(into, out, meet_at_target: bool = True) -> set:
    """Brute force: (i, o) with into[i] -> out[o] meeting at out's target (or at out's source), distinct images."""
    found = set()
    for (i, (s_i, d_i, sh_i)), (o, (s_o, d_o, sh_o)) in itertools.product(enumerate(images(into)), enumerate(images(out))):
        if meet_at_target and d_i == d_o and (s_i, sh_i) != (s_o, sh_o):
            found.add((i, o))
        if not meet_at_target and d_i == s_o and (s_i, sh_i) != (d_o, tuple(-x for x in sh_o)):
            found.add((i, o))
    return found


def test_triplets_and_quadruplets_equal_brute_force_enumeration(kit):
    atoms = kit.cu_bulk()  # 4 atoms, many periodic images of each: b = c across cells is the hard case
    g = derived(kit.labelled(atoms, "b"), GemNetOCConfig.tiny())
    for trip, into, out in ((g.e2e, g.main, g.main), (g.quad_outer, g.quad, g.main),
                            (g.a2e, g.atom_edge, g.main), (g.e2a, g.main, g.atom_edge)):
        assert set(zip(trip.into.tolist(), trip.out.tolist())) == brute_triplets(into, out)
    assert set(zip(g.quad_inner.into.tolist(), g.quad_inner.out.tolist())) == brute_triplets(g.main, g.quad, False)
    main, quad = images(g.main), images(g.quad)
    inner = list(zip(g.quad_inner.into.tolist(), g.quad_inner.out.tolist()))
    outer = list(zip(g.quad_outer.into.tolist(), g.quad_outer.out.tolist()))
    expected = set()
    for db, ba in inner:  # d seen from a: src(d->b) at shift(d->b) + shift(b->a); c at shift(c->a)
        d_image = (main[db][0], tuple(x + y for x, y in zip(main[db][2], quad[ba][2])))
        expected |= {(db, ba, ca) for ba2, ca in outer if ba2 == ba and d_image != (main[ca][0], main[ca][2])}
    q = g.quads
    found = {(inner[i][0], inner[i][1], outer[o][1]) for i, o in zip(q.inner.tolist(), q.outer.tolist())}
    assert len(q.out) == len(found) == len(expected) > 0 and found == expected
    for slots, out in ((g.e2e.slot, g.e2e.out), (q.slot, q.out)):  # slots enumerate each output edge's pairs
        for e in torch.unique(out).tolist():
            assert sorted(slots[out == e].tolist()) == list(range(int((out == e).sum())))


def cluster(distance: float) -> Structure:
    """Atom 0 with three neighbours above it (~1.6 Å) and an atom X at `distance` below it, bonded to a
    sixth atom Y (so quadruplets run through X-0): only the X-0 pair is near a cutoff and no cap binds."""
    x = np.array([0.0, 0.0, -distance])
    core = [[0.0, 0.0, 0.0], [0.955, 0.296, 1.2], [-0.807, 0.748, 1.15], [-0.2, -0.878, 1.3]]
    return Structure("c", np.array([6, 8, 1, 7, 6, 1]), np.array([*core, x, x + [-1.6, -0.4, -0.4]]), None, np.zeros(3, bool))


SUBGRAPH = {"cutoff_quad": "quad", "cutoff_atom_edge": "atom_edge", "cutoff_main": "main", "cutoff": "atom"}


@pytest.mark.parametrize("name", list(SUBGRAPH))
def test_energy_and_forces_continuous_where_a_pair_crosses_each_cutoff(kit, name):
    cutoff, delta = getattr(TINY, name), 1e-5
    model = kit.make_model("gemnet", double=True)
    sides = {}
    for step in (-2, -1, 1, 2):
        structure = cluster(cutoff + step * delta)
        pairs = np.linalg.norm(structure.positions[:, None] - structure.positions[None], axis=-1)[np.triu_indices(6, 1)]
        others = np.delete(pairs, 3)  # every pair but X-0
        assert np.abs(others[:, None] - np.array([getattr(TINY, c) for c in SUBGRAPH])).min() > 0.1
        batch = kit.make_batch([structure], double=True)
        direct, grad = model(batch, forces="direct"), model(batch, forces="gradient")
        sides[step] = (batch.pos, direct.energy.detach(), direct.forces.detach(), grad.forces.detach(),
                       len(getattr(derived(structure), SUBGRAPH[name])))
    (x0, e0, _, fg0, n0), (x1, e1, _, fg1, n1) = sides[-1], sides[1]
    assert n0 == n1 + 2, "the pair must leave this sub-graph (both directions)"
    # Moving X also moves its other pairs, smoothly: the trapezoid rule removes that part (error ~delta^3),
    # and for forces the change across the cutoff must equal the changes on either side (error ~delta^2).
    smooth = -(0.5 * (fg0 + fg1) * (x1 - x0)).sum()
    torch.testing.assert_close(e1 - e0, smooth.reshape(1), rtol=0, atol=1e-9)
    for k in (2, 3):
        f = {step: value[k] for step, value in sides.items()}
        torch.testing.assert_close(f[1] - f[-1], (f[2] - f[1]) + (f[-1] - f[-2]), rtol=0, atol=1e-7)


def count(config) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in config.build().parameters())


@pytest.mark.parametrize(("preset", "jmp"), [("small", 38.9e6), pytest.param("large", 216.4e6, marks=pytest.mark.slow)])
def test_presets_match_jmp_backbone_parameter_counts(preset, jmp):
    assert abs(count(getattr(GemNetOCConfig, preset)()) / jmp - 1) < 0.02


def test_config_rejects_a_subgraph_wider_than_the_given_graph():
    with pytest.raises(ValueError, match="cutoff_main=6.0 exceeds cutoff=5.0"):
        GemNetOCConfig(cutoff=5.0, cutoff_main=6.0, cutoff_quad=5.0, cutoff_atom_edge=5.0)
    with pytest.raises(ValueError, match="max_neighbors_main=40 exceeds max_neighbors=30"):
        GemNetOCConfig(max_neighbors=30, max_neighbors_main=40)


def test_mask_type_and_empty_triplets_run():
    """A dimer (no triplets, no quadruplets) with a MASK atom: finite outputs, gradients reach the MASK row."""
    model = AtomisticModel(TINY, tasks=("oc20",))
    dimer = Structure("d", np.array([1, 8]), np.array([[0.0, 0, 0], [0, 0, 1.2]]), None, np.zeros(3, bool))
    batch = collate([dimer], cutoff=TINY.cutoff)
    out = model(ModelInputs.clean(batch).replace(z=torch.tensor([MASK_Z, 8])), forces="gradient")
    assert torch.isfinite(out.energy).all() and torch.isfinite(out.forces).all()
    out.energy.sum().backward()
    assert model.backbone.embedding.weight.grad[MASK_Z].abs().sum() > 0


def test_fitted_scale_factors_give_each_message_its_reference_variance(kit):
    model = kit.make_model("gemnet", double=True)
    batch = kit.make_batch([kit.labelled(kit.slab(), "s"), kit.labelled(kit.cu_bulk(), "b")], double=True)
    fitted = fit_scale_factors(model, batch)
    factors = {n: m for n, m in model.named_modules() if isinstance(m, ScaleFactor)}
    assert set(fitted) == set(factors) and len(fitted) == 2 * 11 + 3 * 2  # per block 11, per output block 2
    ratios = {}
    for name, factor in factors.items():
        factor.observer = (lambda n, f: lambda x, ref: ratios.setdefault(n, float((x * f.scale).var(0).mean() / ref.var(0).mean())))(name, factor)
    model(batch)
    torch.testing.assert_close(torch.tensor(list(ratios.values()), dtype=torch.float64), torch.ones(len(ratios), dtype=torch.float64),
                               rtol=1e-6, atol=0)
    assert any(abs(v - 1) > 0.1 for v in fitted.values())  # unfitted they were far from unit variance
