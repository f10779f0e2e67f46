"""Fixtures for model tests: small EMT-labelled structures (molecule, slab, bulk) and tiny models."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from ase.build import add_adsorbate, bulk, fcc111, molecule
from ase.calculators.emt import EMT
from atomforge.batch import collate
from atomforge.models import AtomisticModel
from atomforge.models.equivariant import EquivariantConfig
from atomforge.models.gemnet_oc import GemNetOCConfig
from atomforge.models.painn import PaiNNConfig
from atomforge.schema import Structure

CUTOFF = 5.0
BACKBONES = {"painn": PaiNNConfig.tiny, "e3nn": EquivariantConfig.tiny, "gemnet": GemNetOCConfig.tiny}


def labelled(atoms, system_id: str, frame_kind: str = "unknown", fixed=None) -> Structure:
    """A Structure with EMT energy, forces and (periodic) stress."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    periodic = bool(atoms.pbc.any())
    stress = None
    if atoms.pbc.all():
        stress = atoms.get_stress(voigt=False)
    return Structure(system_id, atoms.numbers, atoms.positions, atoms.cell.array if periodic else None, atoms.pbc,
                     energy=float(atoms.get_potential_energy()), forces=atoms.get_forces(), stress=stress,
                     fixed=fixed, frame_kind=frame_kind)


def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=3)
    return atoms


def slab():
    atoms = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    add_adsorbate(atoms, "O", 1.5, "fcc")
    atoms.rattle(0.05, seed=4)
    return atoms


def cu_bulk():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=5)
    return atoms


def to_double(batch):
    for key in ("pos", "ref_pos", "cell", "shifts", "cand_shifts", "forces", "stress"):
        batch[key] = batch[key].double()
    return batch


def make_batch(structures, tasks=None, double=False):
    """A batch; with double=True positions and cells are the structures' exact float64 values."""
    batch = collate(structures, cutoff=CUTOFF, tasks=tasks)
    if not double:
        return batch
    batch = to_double(batch)
    batch.pos = torch.as_tensor(np.concatenate([s.positions for s in structures]))
    batch.ref_pos = batch.pos.clone()
    batch.cell = torch.as_tensor(np.stack([s.cell if s.cell is not None else np.zeros((3, 3)) for s in structures]))
    return batch


def make_model(kind: str, double: bool = False, seed: int = 0, tasks=("oc20", "ani1x")) -> AtomisticModel:
    """A fresh copy of a cached tiny model (e3nn code generation takes seconds per build)."""
    return copy.deepcopy(_cached_model(kind, double, seed, tuple(tasks)))


@functools.cache
def _cached_model(kind: str, double: bool, seed: int, tasks: tuple[str, ...]) -> AtomisticModel:
    torch.manual_seed(seed)
    model = AtomisticModel(BACKBONES[kind](), tasks=tasks)
    # Non-trivial conditioning, so the adaLN path is exercised by the symmetry tests.
    with torch.no_grad():
        model.null_condition.normal_()
        for name, p in model.named_parameters():
            if "modulation" in name:
                p.normal_(std=0.1)
    model.eval()  # no create_graph in these checks; objectives tests switch to train()
    return model.double() if double else model



@pytest.fixture(params=list(BACKBONES))
def backbone_kind(request) -> str:
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)


class Kit:
    """The helpers above, handed to tests as a fixture (tests import nothing from conftest)."""

    labelled = staticmethod(labelled)
    ethanol = staticmethod(ethanol)
    slab = staticmethod(slab)
    cu_bulk = staticmethod(cu_bulk)
    make_batch = staticmethod(make_batch)
    make_model = staticmethod(make_model)
    to_double = staticmethod(to_double)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
