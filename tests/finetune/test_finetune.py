"""Fine-tuning: layer-wise LR, heads kept or dropped, loss decreases, metrics in physical units, CLI + plots."""

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
from atomforge.finetune.config import DataSpec, FinetuneOptim, TargetSpec
from atomforge.finetune.data import load_downstream
from atomforge.finetune.pretrained import downstream_model
from atomforge.finetune.run import run_variant
from atomforge.finetune.trainer import layer_multiplier, param_groups
from atomforge.models import AtomisticModel
from atomforge.models.painn import PaiNNConfig
from atomforge.tasks import TaskSpec

REPO = Path(__file__).resolve().parents[2]


def test_layer_multipliers_follow_jmp():
    optim = FinetuneOptim()
    six = [layer_multiplier(f"backbone.messages.{i}.phi.0.weight", 6, optim) for i in range(6)]
    assert six == pytest.approx([0.55, 0.40, 0.30, 0.40, 0.55, 0.625])
    assert layer_multiplier("backbone.embedding.weight", 6, optim) == 0.3
    assert layer_multiplier("energy_heads.rmd17.mlp.0.weight", 6, optim) == 1.0
    model = AtomisticModel(PaiNNConfig.tiny(), {"rmd17": TaskSpec("rmd17")}, vector_heads=())
    groups = param_groups(model, optim)
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
    new = TaskSpec("rmd17", cutoff=5.0)
    dropped = downstream_model(source, None, new, keep_heads=False, seed=0)
    assert dropped.tasks == ("rmd17",) and len(dropped.vector_heads) == 0
    assert torch.equal(dropped.state_dict()[key], source.model.state_dict()[key])
    kept = downstream_model(source, None, new, keep_heads=True, seed=0)
    assert kept.tasks == ("ani1x", "oc20", "rmd17")
    head = "energy_heads.ani1x.mlp.0.weight"
    assert torch.equal(kept.state_dict()[head], source.model.state_dict()[head])
    assert kept.config_dict()["task_statistics"]["ani1x"] == source.model.config_dict()["task_statistics"]["ani1x"]


def test_finetune_loss_decreases_and_metrics_in_physical_units(quick_config, pretrain_run):
    config = dataclasses.replace(quick_config, optim=dataclasses.replace(quick_config.optim, max_epochs=6, lr=3e-3))
    summary = run_variant(config, str(pretrain_run), "pretrained", log=lambda line: None)
    history = [json.loads(line) for line in (Path(summary.output) / "history.jsonl").read_text().splitlines()]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    test = summary.metrics["test"]
    assert set(test) == {"energy_mae_meV", "energy_rmse_meV", "energy_mae_meV_per_atom", "force_mae_meV_per_A",
                         "force_rmse_meV_per_A"}
    arrays = np.load(Path(summary.output) / "test_predictions.npz")
    assert test["energy_mae_meV"] == pytest.approx(1000 * np.abs(arrays["energy_pred"] - arrays["energy_true"]).mean())
    assert test["force_mae_meV_per_A"] == pytest.approx(1000 * np.abs(arrays["forces_pred"] - arrays["forces_true"]).mean())
    # labels were converted from kcal/mol: EMT forces on ethanol are O(1) eV/Å, not O(20) kcal/mol/Å
    assert 0.1 < np.abs(arrays["forces_true"]).mean() < 5.0
    assert summary.sizes == {"train": 24, "val": 8, "test": 16}
    meta = json.loads((Path(summary.output) / "checkpoint" / "config.json").read_text())
    assert meta["forces"] == {"rmd17": "gradient"} and meta["pretrained_from"]


def test_property_target_mean_pooling(tmp_path, quick_config):
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
    config = dataclasses.replace(
        quick_config, backbone=PaiNNConfig.tiny(),
        data=DataSpec(path=str(tmp_path / "gap.extxyz"), format="ase", num_train=12, num_val=4),
        target=TargetSpec(kind="property", task="gap", key="gap", pooling="mean"))
    data = load_downstream(config.data, config.target, 5.0)
    assert len(set(data.spec.linear_reference.values())) == 1  # one shared per-atom mean
    summary = run_variant(config, None, "scratch", log=lambda line: None)
    assert set(summary.metrics["test"]) == {"property_mae", "property_rmse"}
    arrays = np.load(Path(summary.output) / "test_predictions.npz")
    gap_true = arrays["energy_true"] / arrays["natoms"]
    assert gap_true.min() > 0.1 and gap_true.max() < 1.0  # the stored label is N·gap, metrics use E/N
    assert summary.metrics["test"]["property_mae"] == pytest.approx(
        np.abs(arrays["energy_pred"] / arrays["natoms"] - gap_true).mean())


@pytest.mark.slow
def test_compare_cli_prints_table_and_writes_json_and_plots(rmd17_file, pretrain_run, tmp_path):
    logs = pretrain_run / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "metrics.jsonl").write_text("".join(
        json.dumps({"kind": "train", "step": s, "loss": 1 / s, "energy_mae/ani1x": 0.1 / s, "force_mae/ani1x": 0.2 / s})
        + "\n" for s in range(1, 6)) + json.dumps({"kind": "val", "step": 5, "val/ani1x/loss": 0.3}) + "\n")
    out = tmp_path / "cmp"
    cmd = [sys.executable, str(REPO / "jobs" / "finetune.py"), "--checkpoint", str(pretrain_run), "--data", str(rmd17_file),
           "--recipe", "rmd17_debug", "--compare", "--output", str(out), "--set", "data.num_train=16",
           "--set", "data.num_val=4", "--set", "data.num_test=8", "--set", "optim.max_epochs=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny model on a shared box: one thread is much faster
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pretrained" in result.stdout and "scratch" in result.stdout and "test force_mae_meV_per_A" in result.stdout
    assert "one run of one seed" in result.stdout  # no single-seed comparison passes for a measurement
    report = json.loads((out / "comparison.json").read_text())
    assert set(report["runs"]) == {"pretrained", "scratch"}
    assert report["runs"]["pretrained"]["num_parameters"] == report["runs"]["scratch"]["num_parameters"]
    for png in ("parity_test.png", "pretraining_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_are_clear(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_job", REPO / "jobs" / "finetune.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.main(["--recipe", "rmd17_debug", "--data", "x.npz"]) == 2
    assert "--checkpoint is required" in capsys.readouterr().err
    assert job.main(["--recipe", "rmd17_debug", "--from-scratch", "--set", "optim.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
    assert job.main(["--recipe", "rmd17_debug", "--from-scratch", "--data", "/nonexistent/rmd17_x.npz"]) == 2
    assert "rmd17_x.npz" in capsys.readouterr().err


@pytest.mark.parametrize("recipe_name", ["rmd17_debug_dens", "rmd17_debug_noisy_nodes"])
def test_finetuning_with_an_auxiliary_objective(quick_config, pretrain_run, recipe_name):
    """DeNS (MD17 settings: rMD17 frames are MD frames, and they are corrupted) and Noisy Nodes train
    through the objective mix with conservative forces; evaluation stays clean."""
    from atomforge.recipes.finetune import recipe

    aux = recipe(recipe_name)
    config = dataclasses.replace(quick_config, objectives=aux.objectives,
                                 optim=dataclasses.replace(quick_config.optim, max_epochs=2))
    summary = run_variant(config, str(pretrain_run), "pretrained", log=lambda line: None)
    history = [json.loads(line) for line in (Path(summary.output) / "history.jsonl").read_text().splitlines()]
    name = next(iter(aux.objectives))
    if name == "dens":
        assert 0 < np.mean([h["train/dens/dens_fraction"] for h in history]) < 1  # p 0.25 per structure
        assert all(h["train/dens/noise_l2mae"] > 0 for h in history)
    else:
        assert all(h["train/noisy_nodes/noise_mse"] > 0 for h in history)
    assert all(np.isfinite(h["train_loss"]) for h in history) and summary.metrics["test"]["force_mae_meV_per_A"] > 0
    meta = json.loads((Path(summary.output) / "checkpoint" / "config.json").read_text())
    assert meta["forces"] == {"rmd17": "gradient"} and name in meta["objectives"]


def test_an_auxiliary_with_other_forces_than_the_target_is_an_error(quick_config):
    from atomforge.objectives import DeNS, MixEntry

    with pytest.raises(ValueError, match="trains direct forces but target.forces is 'gradient'"):
        dataclasses.replace(quick_config, objectives={"dens": MixEntry(DeNS(forces="direct"))})
