"""Several downstream tasks in one fine-tuning run: two rMD17-format molecules, each with its own head,
normalisers, references, metrics and selection score; model selection on the sum of the scores."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from atomforge.artifacts.reference import load_model
from atomforge.finetune.run import run_variant
from atomforge.pipeline.downstream import prepare_downstream

from .conftest import write_rmd17

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def acetaldehyde_shards(tmp_path_factory) -> str:
    """A second molecule in the rMD17 .npz layout (EMT acetaldehyde), through the downstream pipeline."""
    root = tmp_path_factory.mktemp("acetaldehyde")
    prepare_downstream(str(write_rmd17(root / "rmd17_acetaldehyde.npz", 40, seed=1, name="CH3CHO")), str(root / "shards"))
    return str(root / "shards")


def job():
    spec = importlib.util.spec_from_file_location("finetune_job", REPO / "jobs" / "finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_molecules_train_with_their_own_heads_and_select_on_the_summed_score(rmd17_shards, acetaldehyde_shards,
                                                                                 pretrain_run, tmp_path):
    sets = []
    for task in ("ethanol", "acetaldehyde"):
        sets += ["--set", f"data.tasks.{task}.subset.num_train=16", "--set", f"data.tasks.{task}.subset.num_val=8"]
    args = job().parse_args([
        "--recipe", "rmd17_debug", "--checkpoint", str(pretrain_run), "--data", f"ethanol={rmd17_shards}",
        "--data", f"acetaldehyde={acetaldehyde_shards}", "--output", str(tmp_path / "ft"), "--set", "data.max_structures=8",
        "--set", "epochs.max_epochs=3", "--set", "epochs.warmup_epochs=0", *sets])
    config = job().build_config(args)
    assert list(config.data.tasks) == ["ethanol", "acetaldehyde"] and config.data.batching == "mixed"
    assert {t.dataset_name for t in config.data.tasks.values()} == {"rmd17"}  # each set's only dataset
    summary = run_variant(config, str(pretrain_run), "pretrained", log=lambda line: None)
    assert summary.optimizer_steps == 3 * math.ceil(32 / 8)  # an epoch: both training sets once (p ∝ rows)

    assert set(summary.tasks) == {"ethanol", "acetaldehyde"}
    for task in summary.tasks.values():
        assert set(task) == {"val", "test"} and task["val"]["force_mae_meV_per_A"] > 0
    best = load_model(str(Path(summary.output) / "best"))
    assert {"ethanol", "acetaldehyde"} <= set(best.model.tasks)
    first, second = (dict(best.model.energy_heads[t].named_parameters()) for t in ("ethanol", "acetaldehyde"))
    assert any(not torch.equal(first[k], second[k]) for k in first)  # two heads, trained apart
    ethanol, acetaldehyde = best.specs["ethanol"], best.specs["acetaldehyde"]
    assert ethanol.energy_mean != acetaldehyde.energy_mean and ethanol.linear_reference != acetaldehyde.linear_reference
    for name, url in (("ethanol", rmd17_shards), ("acetaldehyde", acetaldehyde_shards)):
        assert best.references[name]["mode"] == "fitted" and best.references[name]["fitted_on"].startswith(url)

    records = [json.loads(line) for line in (Path(summary.output) / "logs" / "metrics.jsonl").read_text().splitlines()]
    selections = [r for r in records if r["kind"] == "selection"]
    assert len(selections) == 4  # step 0 and each epoch
    for r in selections:
        assert r["val/score"] == pytest.approx(r["val/ethanol/score"] + r["val/acetaldehyde/score"])
    assert best.meta["best_step"] == min(selections, key=lambda r: r["val/score"])["step"]
    card = json.loads((Path(summary.output) / "best" / "config.json").read_text())["metrics"]
    assert {"ethanol val", "ethanol test", "acetaldehyde val", "acetaldehyde test"} == set(card)
