"""Fixtures for fine-tuning, hub and calculator tests: an rMD17-format set and a pretraining checkpoint.

The rMD17 file holds EMT-labelled (ASE) thermal displacements of ethanol in kcal/mol, so forces are
exact gradients of the energy; the checkpoint is written by the trainer's own `write_checkpoint`
with the state layout of `training.loop.Worker._state` (model, EMA, config, model.json).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from atomforge.artifacts import checkpoint as ckpt
from atomforge.corpora.rmd17 import KCAL_PER_MOL_TO_EV
from atomforge.datasets import task_spec
from atomforge.finetune.config import DataSpec
from atomforge.models import AtomisticModel
from atomforge.models.painn import PaiNNConfig
from atomforge.recipes.finetune import rmd17_debug
from atomforge.recipes.jmp import debug_cpu, only_tasks
from atomforge.training.config import to_jsonable
from atomforge.training.optim import build_ema

PRETRAIN_TASKS = ("ani1x", "oc20")


def write_rmd17(path: Path, num_frames: int, seed: int = 0) -> Path:
    """Ethanol frames displaced around equilibrium, EMT energies/forces converted to kcal/mol."""
    from ase.build import molecule
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    base = molecule("CH3CH2OH")
    coords, energies, forces = [], [], []
    for _ in range(num_frames):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        atoms.calc = EMT()
        coords.append(atoms.positions.copy())
        energies.append(atoms.get_potential_energy() / KCAL_PER_MOL_TO_EV)
        forces.append(atoms.get_forces() / KCAL_PER_MOL_TO_EV)
    path.parent.mkdir(parents=True, exist_ok=True)
    energies, forces = np.array(energies), np.array(forces)
    np.savez(path, nuclear_charges=base.numbers.astype(np.int64), coords=np.array(coords), energies=energies,
             forces=forces, old_indices=np.arange(num_frames), old_energies=energies, old_forces=forces)
    return path


def pretrain_checkpoint(directory: Path, seed: int = 0) -> Path:
    """A checkpoint of a tiny PaiNN with JMP heads for PRETRAIN_TASKS, in the trainer's layout."""
    torch.manual_seed(seed)
    config = only_tasks(debug_cpu(), PRETRAIN_TASKS)
    specs = {t: dataclasses.replace(task_spec(t), cutoff=5.0, max_neighbors=20,
                                    linear_reference={1: -13.6, 6: -1029.0, 8: -2041.0} if t == "ani1x" else {})
             for t in PRETRAIN_TASKS}
    model = AtomisticModel(PaiNNConfig.tiny(), specs)
    ema = build_ema(model, 0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    ema.update_parameters(model)  # the EMA copy = these weights
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # the raw weights differ from the EMA copy
    state = {"step": 10, "world_size": 1, "model": model.state_dict(), "ema": ema.state_dict(),
             "optimizer": {}, "scheduler": {}, "scaler": {}, "mixers": [], "torch_rng": torch.get_rng_state()}
    return ckpt.write_checkpoint(directory / ckpt.checkpoint_name(10), state, to_jsonable(config), model.config_dict())



@pytest.fixture(scope="session")
def rmd17_file(tmp_path_factory) -> Path:
    return write_rmd17(tmp_path_factory.mktemp("rmd17") / "rmd17_ethanol.npz", 48)


@pytest.fixture(scope="session")
def pretrain_run(tmp_path_factory) -> Path:
    """A run directory holding one checkpoint (what jmp_pretrain writes in local mode)."""
    run = tmp_path_factory.mktemp("run")
    pretrain_checkpoint(run)
    return run


@pytest.fixture
def quick_config(rmd17_file, tmp_path):
    """rmd17_debug on the fixture set, a few epochs."""
    base = rmd17_debug()
    return dataclasses.replace(
        base, data=DataSpec(path=str(rmd17_file), format="rmd17", num_train=24, num_val=8, num_test=None),
        optim=dataclasses.replace(base.optim, max_epochs=4, batch_size=8, patience=10, warmup_epochs=0),
        output=str(tmp_path / "ft"))

