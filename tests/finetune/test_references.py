"""Per-element linear references of a downstream task: least squares on its training split, kept from the
pretrained model, or trained with the model; what the checkpoint, export and model card record."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from atomforge.artifacts.export import export
from atomforge.artifacts.reference import load_model
from atomforge.batch import collate
from atomforge.models import AtomisticModel
from atomforge.models.painn import PaiNNConfig
from atomforge.pipeline.downstream import prepare_downstream
from atomforge.recipes.finetune import downstream
from atomforge.schema import Structure
from atomforge.tasks import TaskSpec
from atomforge.training.config import Subset
from atomforge.training.data import open_source, split_loader, task_spec, task_splits

KNOWN = {1: -13.6, 6: -1029.5, 8: -2041.25}  # eV per atom


@pytest.fixture(scope="module")
def synthetic_shards(tmp_path_factory) -> str:
    """60 H/C/O molecules of varied composition whose energies are Σ e_Z plus 5 meV noise, as an extxyz
    preprocessed by the downstream pipeline (dataset "synthetic")."""
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(60):
        counts = {1: int(rng.integers(1, 9)), 6: int(rng.integers(1, 5)), 8: int(rng.integers(0, 4))}
        numbers = [z for z, n in counts.items() for _ in range(n)]
        positions = np.array([[1.6 * i, 0.3 * (i % 2), 0.0] for i in range(len(numbers))]) + rng.normal(0, 0.05, (len(numbers), 3))
        atoms = Atoms(numbers=numbers, positions=positions)
        energy = sum(KNOWN[z] * n for z, n in counts.items()) + rng.normal(0, 0.005)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=rng.normal(0, 0.1, (len(numbers), 3)))
        frames.append(atoms)
    root = tmp_path_factory.mktemp("synthetic")
    write(root / "synthetic.extxyz", frames)
    prepare_downstream(str(root / "synthetic.extxyz"), str(root / "shards"), dataset="synthetic")
    return str(root / "shards")


def spec_of(task, pretrained=None) -> TaskSpec:
    source = open_source(task.dataset_name, task.url)
    return task_spec(task, source, task_splits(source, None, task)["train"], pretrained)


def test_least_squares_on_the_training_split_recovers_known_references(synthetic_shards):
    spec = spec_of(downstream("synthetic", synthetic_shards, Subset(40, 10)))
    assert spec.linear_reference == {z: pytest.approx(v, abs=0.01) for z, v in KNOWN.items()}
    shifted = spec_of(downstream("synthetic", synthetic_shards, Subset(40, 10), reference_fit="mean_per_atom"))
    assert len(set(shifted.linear_reference.values())) == 1  # the other fit gives one shared value: not KNOWN


def test_pretrained_reference_is_kept_and_the_mean_fitted_around_it(synthetic_shards, pretrain_run):
    pretrained = load_model(str(pretrain_run))
    task = dataclasses.replace(downstream("synthetic", synthetic_shards, Subset(40, 10)), reference="pretrained",
                               reference_task="ani1x")
    spec = spec_of(task, pretrained)
    assert spec.linear_reference == {1: -13.6, 6: -1029.0, 8: -2041.0}  # ani1x's, unchanged
    # The per-atom mean of the residual around the kept reference, recomputed from the known energies:
    # Σ_Z (KNOWN_Z - kept_Z) n_Z / Σ n; noise aside, it is the weighted mean of the differences.
    source = open_source("synthetic", synthetic_shards)
    table = source.shards.table("train", columns=["atomic_numbers", "energy"]).take(task_splits(source, None, task)["train"].rows)
    z = np.concatenate(table.column("atomic_numbers").to_pylist())
    residual = np.sum(table.column("energy").to_numpy()) - sum(spec.linear_reference[int(e)] for e in z)
    assert spec.energy_mean == pytest.approx(residual / len(z), abs=1e-9)
    with pytest.raises(ValueError, match="needs a pretrained task 'oc22'"):
        spec_of(dataclasses.replace(task, reference_task="oc22"), pretrained)


def test_only_the_trained_tasks_rows_get_a_gradient():
    specs = {t: TaskSpec(t, cutoff=5.0, linear_reference={1: -1.0, 8: -2.0}) for t in ("a", "b")}
    model = AtomisticModel(PaiNNConfig.tiny(), specs)
    names = [n for n, _ in model.named_parameters()]
    model.train_references(["a"])
    assert sorted(n for n, _ in model.named_parameters()) == sorted([*names, "linear_reference"])
    assert sorted(model.state_dict()) == sorted(AtomisticModel(PaiNNConfig.tiny(), specs).state_dict())  # same keys
    water = Structure("w", np.array([8, 1, 1]), np.array([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]), energy=-3.0)
    batch = collate([water, water], cutoff=5.0, tasks=[0, 1])  # the same molecule in task a and task b
    model(batch).energy.sum().backward()
    grad = model.linear_reference.grad
    assert grad[0, 8] == 1.0 and grad[0, 1] == 2.0  # ∂E/∂e_Z = the atom counts, in the trained row
    assert not grad[1].any()  # task b's reference is not trained: no gradient, no update


def test_trainable_reference_is_trained_recorded_and_exported(quick_config, pretrain_run, tmp_path, two_ranks):
    task = dataclasses.replace(quick_config.data.tasks["rmd17"], trainable_reference=True)
    config = dataclasses.replace(quick_config, data=dataclasses.replace(quick_config.data, tasks={"rmd17": task}),
                                 init=dataclasses.replace(quick_config.init, source=str(pretrain_run)),
                                 early_stopping=None, epochs=dataclasses.replace(quick_config.epochs, max_epochs=3))
    trainer = two_ranks(config)[1][0]
    trained = load_model(config.checkpoint.output)  # the newest checkpoint, EMA weights
    record = trained.references["rmd17"]
    assert record["mode"] == "trainable" and record["initial"].startswith("least squares")
    initial = {int(z): v for z, v in record["initial_values"].items()}
    final = trained.specs["rmd17"].linear_reference
    assert set(final) == set(initial) and max(abs(final[z] - initial[z]) for z in initial) > 1e-4  # it moved
    ema = trainer.validated_model().linear_reference.detach()
    assert final == {z: pytest.approx(float(ema[0, z]), abs=1e-12) for z in final}  # = the weights' values

    export(trained, str(tmp_path / "export"))
    exported = json.loads((tmp_path / "export" / "config.json").read_text())["tasks"]["rmd17"]
    assert exported["reference"]["mode"] == "trainable"
    assert {int(z): v for z, v in exported["linear_reference"].items()} == pytest.approx(final)
    card = (tmp_path / "export" / "README.md").read_text()
    assert "| rmd17 | trainable | trained with the model, starting from least squares" in card
    loaded = load_model(str(tmp_path / "export"))
    source = open_source("rmd17", task.url)
    val = task_splits(source, config.data, task)["val"]
    batch = next(iter(split_loader(source, val, loaded.specs["rmd17"], 0, config.data)))
    energy = loaded.model(batch).energy.detach()
    assert torch.allclose(energy, trained.model(batch).energy.detach(), rtol=0, atol=1e-9)
    with torch.no_grad():  # back at the initial values, the energy moves by Σ_atoms (initial - trained)
        for z, value in initial.items():
            loaded.model.linear_reference[0, z] = value
    shift = torch.zeros_like(energy).index_add_(0, batch.batch, torch.tensor(
        [initial.get(int(z), 0.0) - final.get(int(z), 0.0) for z in batch.z], dtype=torch.float64))
    assert torch.allclose(loaded.model(batch).energy.detach() - energy, shift, atol=1e-9)
    assert Path(config.checkpoint.output, "config.json").exists()
