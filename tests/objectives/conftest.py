"""Fixtures for objective tests: EMT-labelled water, slab (fixed atoms), MD frame; tiny models; a recorder."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from ase.build import add_adsorbate, fcc111, molecule
from ase.calculators.emt import EMT
from atomforge.batch import collate
from atomforge.models import AtomisticModel, ModelInputs
from atomforge.models.equivariant import EquivariantConfig
from atomforge.models.painn import PaiNNConfig
from atomforge.objectives import ObjectiveContext
from atomforge.schema import Structure
from atomforge.tasks import TaskSpec

CUTOFF = 5.0
# Non-trivial normalisers and weights, so hand computations check that they are applied.
TASKS = {"water": TaskSpec("water", CUTOFF, energy_std=2.0, force_std=0.5, energy_weight=1.5, force_weight=3.0),
         "metal": TaskSpec("metal", CUTOFF, energy_std=4.0, force_std=0.25, force_weight=2.0)}


def labelled(atoms, system_id: str, frame_kind: str = "unknown", fixed=None) -> Structure:
    atoms = atoms.copy()
    atoms.calc = EMT()
    periodic = bool(atoms.pbc.any())
    return Structure(system_id, atoms.numbers, atoms.positions, atoms.cell.array if periodic else None, atoms.pbc,
                     energy=float(atoms.get_potential_energy()), forces=atoms.get_forces(), fixed=fixed, frame_kind=frame_kind)


def water(seed: int = 0):
    atoms = molecule("H2O")
    atoms.rattle(0.05, seed=seed)
    return atoms


def slab():
    atoms = fcc111("Cu", (2, 2, 2), vacuum=5.0)
    add_adsorbate(atoms, "O", 1.5, "fcc")
    add_adsorbate(atoms, "H", 2.4, "fcc")
    atoms.rattle(0.05, seed=4)
    return atoms


def make_batch(structures, tasks=None):
    return collate(structures, cutoff=CUTOFF, tasks=tasks)


def water_batch():
    return make_batch([labelled(water(), "w")], tasks=[0])


def mixed_batch():
    """Two waters (one an MD frame) and a slab whose bottom layer is fixed; tasks water/metal."""
    atoms = slab()
    fixed = atoms.positions[:, 2] < atoms.positions[:, 2].min() + 0.5
    return make_batch([labelled(water(1), "w1"), labelled(water(2), "w2", frame_kind="md"),
                       labelled(atoms, "s", fixed=fixed)], tasks=[0, 0, 1])


def make_model(kind: str = "painn", seed: int = 0) -> AtomisticModel:
    return copy.deepcopy(_cached(kind, seed))


@functools.cache
def _cached(kind: str, seed: int) -> AtomisticModel:
    torch.manual_seed(seed)
    config = PaiNNConfig.tiny() if kind == "painn" else EquivariantConfig.tiny()
    return AtomisticModel(config, tasks=TASKS)


def context(seed: int = 0, step: int = 0, total_steps: int = 10) -> ObjectiveContext:
    return ObjectiveContext(torch.Generator().manual_seed(seed), TASKS, list(TASKS), step=step, total_steps=total_steps)


class Recorder:
    """Calls the model and keeps (inputs, request, output) of every call, for hand computations:
    the ModelInputs it read (a batch as its clean view) and the keywords saying what to compute."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __call__(self, inputs, **request):
        inputs = inputs if isinstance(inputs, ModelInputs) else ModelInputs.clean(inputs)
        out = self.model(inputs, **request)
        self.calls.append((inputs, request, out))
        return out


class Kit:
    labelled = staticmethod(labelled)
    water = staticmethod(water)
    slab = staticmethod(slab)
    make_batch = staticmethod(make_batch)
    water_batch = staticmethod(water_batch)
    mixed_batch = staticmethod(mixed_batch)
    make_model = staticmethod(make_model)
    context = staticmethod(context)
    Recorder = Recorder
    TASKS = TASKS


@pytest.fixture
def kit() -> type[Kit]:
    return Kit



@pytest.fixture
def rng():
    return np.random.default_rng(0)
