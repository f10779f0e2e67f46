"""Backbone physics: energies invariant, forces and vector heads equivariant (rotation, translation,
permutation, periodic image choice); batch composition does not change a structure's outputs."""

from __future__ import annotations

import numpy as np
import torch
from ase.build import molecule
from atomforge.models import ModelInputs
from scipy.spatial.transform import Rotation

TOL = dict(rtol=1e-7, atol=1e-8)


def outputs(kit, model, atoms, vector_input=None):
    """(energy (1,), direct forces, gradient forces, noise head) for one structure, float64."""
    batch = kit.make_batch([kit.labelled(atoms, "x")], double=True)
    vi = None if vector_input is None else torch.as_tensor(vector_input)
    inputs = ModelInputs.clean(batch).replace(vector_input=vi)
    direct = model(inputs, forces="direct", vector_heads=("noise",))
    grad = model(inputs, forces="gradient")
    return direct.energy.detach(), direct.forces.detach(), grad.forces.detach(), direct.vectors["noise"].detach()


def check_equivariant(reference, transformed, rotation=None, perm=None):
    e0, fd0, fg0, n0 = reference
    e1, fd1, fg1, n1 = transformed
    rot = torch.eye(3, dtype=torch.float64) if rotation is None else torch.as_tensor(rotation)
    torch.testing.assert_close(e1, e0, **TOL)
    for a, b in ((fd0, fd1), (fg0, fg1), (n0, n1)):
        expected = a @ rot.T
        expected = expected if perm is None else expected[perm]
        torch.testing.assert_close(b, expected, **TOL)


def test_molecule_rotation_translation_permutation(kit, backbone_kind, rng):
    model = kit.make_model(backbone_kind, double=True)
    atoms = kit.ethanol()
    vectors = rng.normal(size=(len(atoms), 3))  # DeNS force encoding must rotate with the structure
    reference = outputs(kit, model, atoms, vectors)
    rotation = Rotation.random(random_state=1).as_matrix()
    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation.T + np.array([1.3, -0.7, 2.1])
    check_equivariant(reference, outputs(kit, model, moved, vectors @ rotation.T), rotation)
    perm = rng.permutation(len(atoms))
    check_equivariant(reference, outputs(kit, model, atoms[perm], vectors[perm]), perm=torch.as_tensor(perm))


def test_periodic_rotation_and_image_choice(kit, backbone_kind):
    model = kit.make_model(backbone_kind, double=True)
    for atoms in (kit.cu_bulk(), kit.slab()):
        reference = outputs(kit, model, atoms)
        rotation = Rotation.random(random_state=2).as_matrix()
        rotated = atoms.copy()
        rotated.set_cell(atoms.cell.array @ rotation.T)
        rotated.positions = atoms.positions @ rotation.T
        check_equivariant(reference, outputs(kit, model, rotated), rotation)
        wrapped = atoms.copy()  # another periodic image of some atoms: same crystal, same outputs
        wrapped.positions[::2] += atoms.cell.array[0] - atoms.cell.array[1]
        check_equivariant(reference, outputs(kit, model, wrapped))


def test_batch_composition_does_not_change_outputs(kit, backbone_kind):
    model = kit.make_model(backbone_kind, double=True)
    structures = [kit.labelled(kit.ethanol(), "a"), kit.labelled(kit.slab(), "b"), kit.labelled(molecule("H2O"), "c")]
    together = model(kit.make_batch(structures, tasks=[1, 0, 1], double=True), forces="direct")
    alone = model(kit.make_batch(structures[1:2], tasks=[0], double=True), forces="direct")
    torch.testing.assert_close(together.energy[1:2], alone.energy, **TOL)
    n0 = len(structures[0].atomic_numbers)
    torch.testing.assert_close(together.forces[n0 : n0 + len(structures[1].atomic_numbers)], alone.forces, **TOL)
