"""Fine-tuning on the trainer: layer-wise LR, heads kept or dropped, loss decreases, metrics in physical units, CLI + plots."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from atomforge.artifacts.reference import load_model
from atomforge.finetune.run import run_variant
from atomforge.models import AtomisticModel
from atomforge.models.painn import PaiNNConfig
from atomforge.pipeline.downstream import prepare_downstream
from atomforge.recipes.finetune import property_mean
from atomforge.tasks import TaskSpec
from atomforge.training.config import LayerLR, OptimConfig
from atomforge.training.initialization import initial_model
from atomforge.training.optim import layer_multiplier, param_groups

from .conftest import quick

REPO = Path(__file__).resolve().parents[2]


def test_layer_multipliers_follow_jmp():
    layer_lr = LayerLR()
    six = [layer_multiplier(f"backbone.messages.{i}.phi.0.weight", 6, layer_lr) for i in range(6)]
    assert six == pytest.approx([0.55, 0.40, 0.30, 0.40, 0.55, 0.625])
    assert layer_multiplier("backbone.embedding.weight", 6, layer_lr) == 0.3
    assert layer_multiplier("energy_heads.rmd17.mlp.0.weight", 6, layer_lr) == 1.0
    model = AtomisticModel(PaiNNConfig.tiny(), {"rmd17": TaskSpec("rmd17")}, vector_heads=())
    groups = param_groups(model, OptimConfig(layer_lr=layer_lr))
    assert {g["lr_multiplier"] for g in groups} == {0.3, 0.55, 0.625, 1.0}  # 2 blocks: JMP's first and last
    by_name = {n: g["lr_multiplier"] for g in groups for n in g["names"]}
    assert by_name["backbone.messages.0.phi.0.weight"] == 0.55 and by_name["backbone.updates.1.u.weight"] == 0.625
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_checkpoint_heads_dropped_or_kept(pretrain_run):
    source = load_model(str(pretrain_run))
    assert source.model.tasks == ("ani1x", "oc20") and source.ema
    raw = load_model(str(pretrain_run), use_ema=False)
    key = "backbone.embedding.weight"
    assert torch.allclose(raw.model.state_dict()[key], source.model.state_dict()[key] + 0.01)
    assert source.specs["ani1x"].cutoff == 5.0 and source.specs["ani1x"].max_neighbors == 20
    assert source.specs["ani1x"].linear_reference[6] == pytest.approx(-1029.0)
    new = {"rmd17": TaskSpec("rmd17", cutoff=5.0)}
    dropped = initial_model(None, new, (), 0, source, keep_heads=False)
    assert dropped.tasks == ("rmd17",) and len(dropped.vector_heads) == 0
    assert torch.equal(dropped.state_dict()[key], source.model.state_dict()[key])
    kept = initial_model(None, new, (), 0, source, keep_heads=True)
    assert kept.tasks == ("ani1x", "oc20", "rmd17")
    head = "energy_heads.ani1x.mlp.0.weight"
    assert torch.equal(kept.state_dict()[head], source.model.state_dict()[head])
    assert kept.config_dict()["task_statistics"]["ani1x"] == source.model.config_dict()["task_statistics"]["ani1x"]
    # A data task named like a kept task continues with its trained head; without kept heads it gets a new one.
    same = {"ani1x": dataclasses.replace(source.specs["ani1x"])}
    assert torch.equal(initial_model(None, same, (), 0, source, keep_heads=True).state_dict()[head],
                       source.model.state_dict()[head])
    assert not torch.equal(initial_model(None, same, (), 0, source, keep_heads=False).state_dict()[head],
                           source.model.state_dict()[head])


def train_records(output: Path) -> list[dict]:
    lines = (output / "logs" / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


def test_finetune_loss_decreases_and_metrics_in_physical_units(quick_config, pretrain_run):
    config = dataclasses.replace(quick_config, epochs=dataclasses.replace(quick_config.epochs, max_epochs=6),
                                 optim=dataclasses.replace(quick_config.optim, lr=3e-3))
    summary = run_variant(config, str(pretrain_run), "pretrained", log=lambda line: None)
    train = train_records(Path(summary.output))
    assert len(train) == 6 and train[-1]["loss"] < train[0]["loss"]  # one record per epoch
    assert summary.epochs == 6 and summary.optimizer_steps == 6 * 3  # 24 structures in batches of 8
    test = summary.metrics["test"]
    assert set(test) == {"energy_mae_meV", "energy_rmse_meV", "energy_mae_meV_per_atom", "force_mae_meV_per_A",
                         "force_rmse_meV_per_A"}
    arrays = np.load(Path(summary.output) / "test_predictions.npz")
    assert test["energy_mae_meV"] == pytest.approx(1000 * np.abs(arrays["energy_pred"] - arrays["energy_true"]).mean())
    assert test["force_mae_meV_per_A"] == pytest.approx(1000 * np.abs(arrays["forces_pred"] - arrays["forces_true"]).mean())
    # labels were converted from kcal/mol: EMT forces on ethanol are O(1) eV/Å, not O(20) kcal/mol/Å
    assert 0.1 < np.abs(arrays["forces_true"]).mean() < 5.0
    assert summary.sizes == {"train": 24, "val": 8, "test": 16} and len(arrays["energy_true"]) == 16
    best = Path(summary.output) / "best"
    records = json.loads((best / "tasks.json").read_text())
    assert records["rmd17"]["forces"] == "gradient"
    meta = json.loads((best / "config.json").read_text())
    assert meta["kind"] == "finetune" and meta["pretrained_from"] and meta["metrics"]["test"] == test
    history = [json.loads(line) for line in (Path(summary.output) / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3, 4, 5, 6]  # validated at step 0 and after every epoch


def test_property_target_mean_pooling(tmp_path):
    from ase.build import molecule
    from ase.io import write

    rng = np.random.default_rng(0)
    frames = []
    for i in range(20):
        atoms = molecule(["H2O", "CH4", "NH3", "CH3OH"][i % 4])
        atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
        atoms.info["gap"] = float(len(atoms)) * 0.1 + 0.01 * i
        frames.append(atoms)
    write(tmp_path / "gap.extxyz", frames)
    prepare_downstream(str(tmp_path / "gap.extxyz"), str(tmp_path / "shards"), dataset="property",
                       property_key="gap", property_per_atom=True)
    config = quick(property_mean(), str(tmp_path / "shards"), tmp_path / "ft", num_train=12, num_val=4)
    summary = run_variant(config, None, "scratch", log=lambda line: None)
    reference = load_model(str(Path(summary.output) / "best")).specs["property"].linear_reference
    assert len(set(reference.values())) == 1  # one shared per-atom mean
    assert set(summary.metrics["test"]) == {"property_mae", "property_rmse"}
    arrays = np.load(Path(summary.output) / "test_predictions.npz")
    gap_true = arrays["energy_true"] / arrays["natoms"]
    assert gap_true.min() > 0.1 and gap_true.max() < 1.0  # the stored label is N·gap, metrics use E/N
    assert summary.metrics["test"]["property_mae"] == pytest.approx(
        np.abs(arrays["energy_pred"] / arrays["natoms"] - gap_true).mean())


@pytest.mark.slow
def test_compare_cli_prints_table_and_writes_json_and_plots(rmd17_shards, pretrain_run, tmp_path):
    logs = pretrain_run / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "metrics.jsonl").write_text("".join(
        json.dumps({"kind": "train", "step": s, "loss": 1 / s, "energy_mae/ani1x": 0.1 / s, "force_mae/ani1x": 0.2 / s})
        + "\n" for s in range(1, 6)) + json.dumps({"kind": "val", "step": 5, "val/ani1x/loss": 0.3}) + "\n")
    out = tmp_path / "cmp"
    cmd = [sys.executable, str(REPO / "jobs" / "finetune.py"), "--checkpoint", str(pretrain_run), "--data", rmd17_shards,
           "--recipe", "rmd17_debug", "--compare", "--output", str(out), "--set", "data.tasks.rmd17.subset.num_train=16",
           "--set", "data.tasks.rmd17.subset.num_val=4", "--set", "data.tasks.rmd17.subset.num_test=8",
           "--set", "epochs.max_epochs=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny model on a shared box: one thread is much faster
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pretrained" in result.stdout and "scratch" in result.stdout and "test force_mae_meV_per_A" in result.stdout
    assert "one run of one seed" in result.stdout  # no single-seed comparison passes for a measurement
    report = json.loads((out / "comparison.json").read_text())
    assert set(report["runs"]) == {"pretrained", "scratch"}
    assert report["runs"]["pretrained"]["num_parameters"] == report["runs"]["scratch"]["num_parameters"]
    assert report["runs"]["pretrained"]["sizes"] == {"train": 16, "val": 4, "test": 8}
    for png in ("parity_test.png", "pretraining_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_are_clear(capsys, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_job", REPO / "jobs" / "finetune.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.main(["--recipe", "rmd17_debug", "--data", "x"]) == 2
    assert "--checkpoint is required" in capsys.readouterr().err
    assert job.main(["--recipe", "rmd17_debug", "--from-scratch", "--set", "optim.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
    missing = tmp_path / "nonexistent" / "rmd17_x"
    assert job.main(["--recipe", "rmd17_debug", "--from-scratch", "--data", str(missing), "--output",
                     str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "rmd17_x" in err and "task 'rmd17'" in err


@pytest.mark.parametrize("recipe_name", ["rmd17_debug_dens", "rmd17_debug_noisy_nodes"])
def test_finetuning_with_an_auxiliary_objective(quick_config, pretrain_run, recipe_name):
    """DeNS (MD17 settings: rMD17 frames are MD frames, and they are corrupted) and Noisy Nodes train
    through the objective mix with conservative forces; evaluation stays clean."""
    from atomforge.recipes.finetune import recipe

    aux = recipe(recipe_name)
    config = dataclasses.replace(quick_config, objectives=aux.objectives,
                                 epochs=dataclasses.replace(quick_config.epochs, max_epochs=2))
    summary = run_variant(config, str(pretrain_run), "pretrained", log=lambda line: None)
    history = [json.loads(line) for line in (Path(summary.output) / "history.jsonl").read_text().splitlines()]
    history = [h for h in history if h["step"] > 0]  # the step-0 validation has no training step before it
    name = next(iter(aux.objectives))
    if name == "dens":
        assert 0 < np.mean([h["train/dens/dens_fraction"] for h in history]) < 1  # p 0.25 per structure
        assert all(h["train/dens/noise_l2mae"] > 0 for h in history)
    else:
        assert all(h["train/noisy_nodes/noise_mse"] > 0 for h in history)
    assert all(np.isfinite(h["train_loss"]) for h in history) and summary.metrics["test"]["force_mae_meV_per_A"] > 0
    best = Path(summary.output) / "best"
    assert json.loads((best / "tasks.json").read_text())["rmd17"]["forces"] == "gradient"
    assert name in json.loads((best / "config.json").read_text())["objectives"]


def val_records(output: Path) -> dict[int, dict]:
    lines = (output / "logs" / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if r["kind"] == "val" and "val/rmd17/loss" in r}


@pytest.mark.slow
@pytest.mark.ray
def test_two_gloo_workers_fine_tune_on_the_same_trainer_and_survive_a_killed_worker(ray_cluster, quick_config,
                                                                                    pretrain_run, tmp_path,
                                                                                    monkeypatch):
    """The recipe on Ray Train (2 gloo workers): each worker validates half the rows and the merged step-0
    validation is the one-process validation; rank 1 is killed (SIGKILL, a fault-injection hook) before step 3,
    Ray Train restarts the group from the epoch-1 checkpoint (step 2: 24 rows, 2 workers x 8 per step), and the run selects and exports its best weights."""
    import ray.cloudpickle
    from atomforge.artifacts.checkpoint import latest_checkpoint, read_state

    from ..training import faults

    ray.cloudpickle.register_pickle_by_value(faults)  # tests/ is not on the workers' path
    # Ray Train's controller polls the workers every 2 s by default: noticing the killed worker, taking each
    # epoch's checkpoint report and noticing the end each waited up to that long (the fit passes this on to the
    # controller it starts). What is asserted does not depend on how often it polls.
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    config = dataclasses.replace(quick_config, epochs=dataclasses.replace(quick_config.epochs, max_epochs=2,
                                                                          checkpoint_every=1))
    one = run_variant(config, str(pretrain_run), "pretrained", log=lambda line: None)
    two_config = dataclasses.replace(
        config, scaling=dataclasses.replace(config.scaling, num_workers=2, max_failures=1),
        checkpoint=dataclasses.replace(config.checkpoint, output=str(tmp_path / "two")))
    output = tmp_path / "two" / "pretrained"
    fault = faults.FailOnce(step=2, rank=1, output=str(output), mode="kill")
    two = run_variant(two_config, str(pretrain_run), "pretrained", log=lambda line: None, hooks=[fault])
    assert (output / "fault_injected_at_2").exists()
    state = read_state(latest_checkpoint(two.output))
    assert state["world_size"] == 2 and len(state["mixers"]) == 2 and state["step"] == two.optimizer_steps == 4
    train_steps = [r["step"] for r in train_records(output)]
    assert train_steps == [2, 4]  # one record per epoch, none lost or repeated by the restart
    expected, got = val_records(Path(one.output))[0], val_records(output)[0]
    for name in ("val/rmd17/energy_mae", "val/rmd17/force_mae", "val/rmd17/loss"):
        assert got[name] == pytest.approx(expected[name], rel=1e-6), name  # float32 sums in another order
    assert two.sizes == one.sizes and (output / "best" / "tasks.json").exists()
    assert all(np.isfinite(v) for v in two.metrics["test"].values())
