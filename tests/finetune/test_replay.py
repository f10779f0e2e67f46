"""Replay: pretraining data mixed into fine-tuning keeps the pretrained task's head and statistics, is validated,
and reduces forgetting of that task; epochs stay passes over the downstream rows."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from atomforge.artifacts.reference import load_model
from atomforge.finetune.evaluate import evaluate
from atomforge.objectives import JMPSupervised, MixEntry
from atomforge.recipes.finetune import rmd17_debug, with_downstream, with_replay
from atomforge.recipes.jmp import debug_cpu, only_tasks, with_data
from atomforge.training.config import EpochBudget, Subset
from atomforge.training.data import Split, open_source, split_loader, task_probabilities
from atomforge.training.launch import prepare, steps_per_epoch, train
from atomforge.training.overrides import apply_overrides

_spec = importlib.util.spec_from_file_location("training_fixtures", Path(__file__).parents[1] / "training" / "conftest.py")
training_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(training_fixtures)


@pytest.fixture(scope="module")
def task_a(tmp_path_factory) -> tuple[str, Path]:
    """Task A ("ani1x": small H/C/O molecules under a pair potential) and a tiny model pretrained on it alone."""
    root = tmp_path_factory.mktemp("replay")
    url = training_fixtures.write_shards(root, "ani1x", {"train": 120, "val": 16}, periodic=False, seed=2)
    run = root / "pretrain"
    config = apply_overrides(only_tasks(with_data(debug_cpu(), {"ani1x": url}), ("ani1x",)), [
        "scaling.num_workers=0", f"checkpoint.output={run}", "max_steps=40", "checkpoint.every_steps=40",
        "log_every=40", "val_every=0", "data.max_atoms=96", "optim.warmup_steps=3", "optim.lr=5e-3"])
    threads = torch.get_num_threads()  # a module fixture runs before the suite's one-thread fixture
    torch.set_num_threads(1)
    try:
        train(config)
    finally:
        torch.set_num_threads(threads)
    return url, run


def finetuning(rmd17_shards: str, run: Path, output: Path, steps: int):
    """Set B (EMT ethanol) from the model pretrained on A, kept heads, A's loss (direct forces), `steps` steps."""
    config = with_downstream(rmd17_debug(), {"rmd17": rmd17_shards})
    task = dataclasses.replace(config.data.tasks["rmd17"], subset=Subset(24, 8))
    return dataclasses.replace(
        config, data=dataclasses.replace(config.data, tasks={"rmd17": task}, batching="mixed", max_structures=8),
        objectives={"jmp": MixEntry(JMPSupervised())}, epochs=None, early_stopping=None, max_steps=steps,
        val_every=steps, log_every=steps, init=dataclasses.replace(config.init, source=str(run), keep_heads=True),
        optim=dataclasses.replace(config.optim, lr=1e-2, warmup_steps=0), validate_at_start=False,
        checkpoint=dataclasses.replace(config.checkpoint, output=str(output), every_steps=steps))


def error_on_a(output: Path, url: str) -> dict[str, float]:
    """The fine-tuned model's (EMA) errors on A's validation split, through A's kept head."""
    model = load_model(str(output))
    source = open_source("ani1x", url)
    val = Split("val", source.files["val"])
    loader = split_loader(source, val, model.specs["ani1x"], model.model.tasks.index("ani1x"), debug_cpu().data)
    return evaluate(model.model, loader, "direct").metrics


def score(metrics: dict[str, float], spec) -> float:
    """A's validation error as its loss weighs it (`hooks.selection_score`): λ_E·MAE_E/s_E + λ_F·MAE_F/s_F."""
    return (spec.energy_weight * metrics["energy_mae_meV"] / spec.energy_std
            + spec.force_weight * metrics["force_mae_meV_per_A"] / spec.force_std) / 1000


def test_replay_reduces_forgetting_of_the_pretrained_task(task_a, rmd17_shards, tmp_path, two_ranks):
    """Fine-tuning on B for 12 steps (two in-process ranks) with and without replaying A at weight 1
    (half the structures), same seed and steps: A's error grows without replay, and is lower with it."""
    url, run = task_a
    plain = finetuning(rmd17_shards, run, tmp_path / "plain", steps=12)
    replayed = with_replay(finetuning(rmd17_shards, run, tmp_path / "replay", steps=12), "ani1x", url, 1.0)
    two_ranks(plain)
    config, _, results = two_ranks(replayed)
    metrics = results[0]
    spec = load_model(str(run)).specs["ani1x"]
    before, without = error_on_a(run, url), error_on_a(tmp_path / "plain", url)
    with_replay_ = error_on_a(tmp_path / "replay", url)
    assert score(without, spec) > score(before, spec)  # fine-tuning on B alone forgets A
    assert score(with_replay_, spec) < score(without, spec)
    assert with_replay_["force_mae_meV_per_A"] < without["force_mae_meV_per_A"]
    assert "val/ani1x/force_mae" in metrics and "val/rmd17/force_mae" in metrics  # the replay task is validated
    kept = json.loads((tmp_path / "replay" / "checkpoint_00000012" / "tasks.json").read_text())["ani1x"]
    pretrained = load_model(str(run)).specs["ani1x"]
    assert kept["reference"]["mode"] == "kept"  # the pretrained head's statistics, never refitted on B
    assert (kept["energy_mean"], kept["energy_std"], kept["force_std"]) == (
        pretrained.energy_mean, pretrained.energy_std, pretrained.force_std)


def test_replay_weight_and_epochs_count_downstream_rows(task_a, rmd17_shards, tmp_path):
    url, run = task_a
    config = with_replay(finetuning(rmd17_shards, run, tmp_path / "e", 1), "ani1x", url, 0.5)
    shares = task_probabilities(config.data, {"rmd17": 24, "ani1x": 120})
    assert shares == pytest.approx({"rmd17": 2 / 3, "ani1x": 1 / 3})  # weight 0.5 against the downstream 1
    budget = dataclasses.replace(config, epochs=EpochBudget(max_epochs=2, warmup_epochs=0))
    assert steps_per_epoch(budget, {"rmd17": 24, "ani1x": 120}) == 5  # 24 rows / (2/3 · 8 per step) = 4.5
    resolved = prepare(budget)[0]
    assert resolved.max_steps == 10 and resolved.val_every == 5
    with pytest.raises(ValueError, match="replay task keeps the pretrained statistics"):
        dataclasses.replace(config.data.tasks["ani1x"], statistics="train")


def test_replay_flag_parses_task_url_weight_and_adds_a_replay_task(pretrain_run, tmp_path):
    spec = importlib.util.spec_from_file_location("finetune_job", Path(__file__).parents[2] / "jobs" / "finetune.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.replay_specs(["ani1x=s3://bucket/shards/ani1x:0.5"]) == [("ani1x", "s3://bucket/shards/ani1x", 0.5)]
    for bad in ("ani1x=data/ani1x", "ani1x=data/ani1x:-1", "data/ani1x:0.5"):
        with pytest.raises(ValueError, match="TASK=URL:WEIGHT"):
            job.replay_specs([bad])
    config = job.build_config(job.parse_args(["--recipe", "rmd17_debug", "--checkpoint", str(pretrain_run),
                                              "--replay", "ani1x=data/ani1x:0.25", "--output", str(tmp_path)]))
    replay = config.data.tasks["ani1x"]
    assert list(config.data.tasks) == ["rmd17", "ani1x"] and config.downstream_tasks() == ("rmd17",)
    assert (replay.replay, replay.weight, replay.statistics, replay.url) == (True, 0.25, "pretrained", "data/ani1x")
    assert config.init.keep_heads and config.data.batching == "mixed"


def test_scratch_variant_trains_without_replay_and_a_new_task_names_its_missing_shards(pretrain_run, tmp_path):
    from atomforge.finetune.run import variant_config
    from atomforge.recipes.finetune import with_downstream

    config = with_replay(rmd17_debug(), "ani1x", str(tmp_path / "ani1x"), 0.5)
    assert variant_config(config, str(pretrain_run), "pretrained").data.tasks.keys() == {"rmd17", "ani1x"}
    assert tuple(variant_config(config, str(pretrain_run), "scratch").data.tasks) == ("rmd17",)  # no pretrained head
    with pytest.raises(ValueError, match="task 'aspirin'"):
        with_downstream(rmd17_debug(), {"rmd17": str(tmp_path), "aspirin": str(tmp_path / "missing")})
