"""Structures covering every shard field's cases, with stored graphs, for loader and columnar tests."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule
from ase.constraints import FixAtoms
from atomforge.graph import neighbor_graph
from atomforge.schema import from_ase, to_row

CUTOFF, SKIN, K, K_STORE = 5.0, 1.0, 12, 20
GRAPH = {"cutoff": CUTOFF, "skin": SKIN, "storage_radius": CUTOFF + SKIN, "max_neighbors": K, "k_store": K_STORE,
         "tie_rule": "strict"}


def varied(index: int):
    """Structures covering every field's cases: periodic / slab / molecule / wire, labels present or not."""
    rng = np.random.default_rng(index)
    kind = index % 4
    if kind == 0:  # bulk, MD frame, with stress
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        atoms.rattle(0.05, seed=index)
        return from_ase(atoms, f"bulk-{index}", energy=-3.0 - index, forces=rng.normal(size=(len(atoms), 3)),
                        stress=rng.normal(size=6), frame_kind="md", dataset="demo")
    if kind == 1:  # slab with fixed atoms and tags
        atoms = fcc111("Cu", (2, 2, 3), vacuum=5.0)
        add_adsorbate(atoms, "O", 1.5, "fcc")
        atoms.pbc = True
        atoms.set_constraint(FixAtoms(indices=range(4)))
        atoms.set_tags([0] * 4 + [1] * 8 + [2])
        atoms.rattle(0.05, seed=index)
        return from_ase(atoms, f"slab-{index}", energy=-7.25 + index, forces=rng.normal(size=(len(atoms), 3)),
                        frame_kind="relax", dataset="demo")
    if kind == 2:  # molecule without forces
        atoms = molecule(("CH3CH2OH", "H2O", "C6H6")[index % 3])
        atoms.rattle(0.02, seed=index)
        return from_ase(atoms, f"mol-{index}", energy=-1.5, forces=None, dataset="demo")
    atoms = Atoms("C4", positions=[[0, 0, 1.3 * i] for i in range(4)], cell=[0, 0, 5.2], pbc=[False, False, True])
    atoms.rattle(0.02, seed=index)  # a wire: periodic along z only, zero a and b vectors; no labels
    return from_ase(atoms, f"wire-{index}", energy=None, forces=None, dataset="demo")


def rows_of(structures):
    return [to_row(s, neighbor_graph(s, CUTOFF, K_STORE, skin=SKIN), split="train") for s in structures]
