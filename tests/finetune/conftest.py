"""Fixtures for fine-tuning, hub and calculator tests: an rMD17-format set, its shards and a pretraining checkpoint.

The rMD17 file holds EMT-labelled (ASE) thermal displacements of ethanol in kcal/mol, so forces are
exact gradients of the energy; its shards come from the pipeline (`prepare_downstream`); the
checkpoint is written by the artifacts' own `write_checkpoint` with the trainer's state layout
(`training.trainer.Trainer.state_dict`: model, EMA, config, model.json).
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
from atomforge.models import AtomisticModel
from atomforge.models.painn import PaiNNConfig
from atomforge.pipeline.downstream import prepare_downstream
from atomforge.recipes.finetune import rmd17_debug
from atomforge.recipes.jmp import debug_cpu, only_tasks
from atomforge.training.build import build_trainer
from atomforge.training.config import EpochBudget, Subset
from atomforge.training.distributed import ThreadGroup, run_ranks
from atomforge.training.launch import prepare, write_resolved_config
from atomforge.training.optim import build_ema
from atomforge.training.overrides import to_jsonable

PRETRAIN_TASKS = ("ani1x", "oc20")


def write_rmd17(path: Path, num_frames: int, seed: int = 0, name: str = "CH3CH2OH") -> Path:
    """Frames of molecule `name` (ASE's g2 set; ethanol by default) displaced around equilibrium, EMT
    energies/forces converted to kcal/mol, in the rMD17 .npz layout."""
    from ase.build import molecule
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    base = molecule(name)
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


@pytest.fixture(scope="session")
def rmd17_shards(rmd17_file, tmp_path_factory) -> str:
    """The fixture set through the downstream pipeline: every frame in the pool split, dataset "rmd17"."""
    out = tmp_path_factory.mktemp("rmd17-shards") / "rmd17"
    prepare_downstream(str(rmd17_file), str(out))
    return str(out)


def quick(config, url: str, output, num_train: int = 24, num_val: int = 8, epochs: int = 4):
    """`config` (a fine-tuning recipe) on `url` with `num_train` / `num_val` structures for a few epochs."""
    task = next(iter(config.data.tasks))
    data = dataclasses.replace(config.data, max_structures=8, tasks={task: dataclasses.replace(
        config.data.tasks[task], url=url, subset=Subset(num_train, num_val))})
    return dataclasses.replace(config, data=data, epochs=EpochBudget(max_epochs=epochs, warmup_epochs=0),
                               early_stopping=dataclasses.replace(config.early_stopping, patience=10),
                               checkpoint=dataclasses.replace(config.checkpoint, output=str(output)))


@pytest.fixture
def quick_config(rmd17_shards, tmp_path):
    """rmd17_debug on the fixture shards (24 train / 8 val / 16 test), a few epochs."""
    return quick(rmd17_debug(), rmd17_shards, tmp_path / "ft")


def fit_on_two_ranks(config):
    """`config` resolved by `prepare` and fitted on two in-process ranks standing in for two workers (two lanes):
    (the resolved config, both ranks' trainers, both ranks' fit results)."""
    config = prepare(config)[0]
    config = dataclasses.replace(config, scaling=dataclasses.replace(config.scaling, num_workers=2))  # 2 lanes, 2 ranks
    write_resolved_config(config)
    group = ThreadGroup(2)
    trainers = [build_trainer(config, rank) for rank in group.ranks()]
    results = run_ranks(group, lambda rank: trainers[rank.rank].fit())
    return config, trainers, results


@pytest.fixture
def two_ranks():
    """`fit_on_two_ranks`, for the tests that train on two in-process ranks."""
    return fit_on_two_ranks
