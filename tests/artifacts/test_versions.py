"""Format versions: artifacts of older atomforge load with the old code's predictions; newer ones are refused.

tests/fixtures/artifacts_v1 was written by atomforge commit 36cbadb (checkpoint and export format 1):
a 4-step pretraining checkpoint in Ray Train local mode, its export by that commit's jobs/export.py,
and that code's energies, forces and stresses on structures.extxyz (see the fixture's README).
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from atomforge.artifacts import checkpoint as ckpt
from atomforge.artifacts.export import FORMAT_VERSION, export, read_files
from atomforge.artifacts.reference import load_model

FIXTURE = Path(__file__).parents[1] / "fixtures" / "artifacts_v1"
CHECKPOINT = FIXTURE / "checkpoint_00000004"
OLD = json.loads((FIXTURE / "predictions.json").read_text())["predictions"]


def assert_predicts(model, expected: dict) -> None:
    """Energy eV, forces eV/Å, stress eV/Å³ of every fixture structure, task and force mode equal `expected`.

    Tolerances are float32 rounding on any x86 CPU (the fixture was written on another machine; SIMD paths
    differ): forces differ by up to ~2e-8 eV/Å there, components zero by symmetry included, so forces get
    1e-7 eV/Å absolute. The fixture's EMA and raw weights differ by 3e-3..5e-2 eV in energy.
    """
    for index, atoms in enumerate(ase.io.read(FIXTURE / "structures.extxyz", index=":")):
        for task, modes in expected[str(index)].items():
            for mode, old in modes.items():
                atoms.calc = model.calculator(task=task, forces=mode)
                assert atoms.get_potential_energy() == pytest.approx(old["energy"], rel=1e-7, abs=1e-7)
                np.testing.assert_allclose(atoms.get_forces(), old["forces"], rtol=1e-5, atol=1e-7)
                if "stress" in old:
                    np.testing.assert_allclose(atoms.get_stress(), old["stress"], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize(("reference", "use_ema", "predictions"), [
    ("checkpoint_00000004", True, "checkpoint_ema"),
    ("checkpoint_00000004", False, "checkpoint_raw"),
    ("export", True, "export"),
])
def test_v1_artifacts_predict_what_the_old_code_predicted(reference, use_ema, predictions):
    restored = load_model(str(FIXTURE / reference), use_ema)
    assert restored.ema == use_ema and restored.model.tasks == ("oc20", "ani1x")
    assert_predicts(restored.model, OLD[predictions])


def test_v1_checkpoint_reads_as_the_current_layout():
    read = ckpt.read_checkpoint(CHECKPOINT)
    assert read.written_version == 1 and read.state["format_version"] == ckpt.FORMAT_VERSION
    raw = torch.load(CHECKPOINT / ckpt.STATE_FILE, weights_only=True)
    assert set(read.state) == set(raw) | {"format", "format_version", "lanes"}
    assert read.state["lanes"] == raw["world_size"] == len(raw["mixers"])  # a v1/v2 run's lanes were its ranks
    assert all(torch.equal(read.state["model"][k], v) for k, v in raw["model"].items())  # every weight as written
    added = set(read.state["model"]) - set(raw["model"])  # parameters added since, at their initial values
    assert added == {"embedding_head.pooled_norm.weight", "embedding_head.pooled_norm.bias"}
    assert all(torch.equal(read.state["optimizer"]["state"][k]["exp_avg"], v["exp_avg"])
               for k, v in raw["optimizer"]["state"].items())
    assert read.model["backbone"]["envelope"] == "basis"  # where version-1 backbones applied it
    oc20 = read.tasks["oc20"]  # inferred from the v1 run config, as the v1 loader did
    assert oc20["cutoff"] == 5.0 and oc20["max_neighbors"] == 20 and oc20["forces"] == "direct"
    assert oc20["linear_reference"] == {"1": -1.5, "6": -1.5, "8": -1.5}
    assert oc20["reference"] == {"mode": "fitted", "fitted_on": "the statistics of the shard dataset shards/oc20",
                                 "method": "least squares of energy on per-element atom counts (preprocessing pipeline)"}


def test_v1_export_reads_as_the_current_layout():
    config, weights = read_files(FIXTURE / "export")
    assert config["format_version"] == FORMAT_VERSION and config["model"]["backbone"]["envelope"] == "basis"
    assert {t: r["reference"] for t, r in config["tasks"].items()} == dict.fromkeys(("oc20", "ani1x"), {"mode": "unrecorded"})


def test_v1_checkpoint_reexported_in_the_current_format_predicts_the_same(tmp_path):
    export(load_model(str(CHECKPOINT)), str(tmp_path / "export"))
    written = json.loads((tmp_path / "export" / "config.json").read_text())
    assert written["format_version"] == FORMAT_VERSION and written["tasks"]["ani1x"]["reference"]["mode"] == "fitted"
    assert written["model"]["backbone"]["envelope"] == "basis"  # the old function travels with the weights
    assert_predicts(load_model(str(tmp_path / "export")).model, OLD["checkpoint_ema"])


def test_current_checkpoint_records_its_version_and_tasks(run_dir):
    directory = ckpt.latest_checkpoint(str(run_dir))
    assert sorted(p.name for p in Path(directory).iterdir()) == sorted(ckpt.FILES)
    read = ckpt.read_checkpoint(directory)
    assert read.written_version == ckpt.FORMAT_VERSION and read.state["format"] == ckpt.FORMAT
    assert set(read.tasks) == {"ani1x", "oc20"}


def test_newer_formats_are_refused_with_their_version(tmp_path):
    shutil.copytree(CHECKPOINT, tmp_path / "checkpoint")
    state = torch.load(CHECKPOINT / ckpt.STATE_FILE, weights_only=True)
    torch.save({**state, "format": ckpt.FORMAT, "format_version": 99}, tmp_path / "checkpoint" / ckpt.STATE_FILE)
    with pytest.raises(ValueError, match=r"version 99; this atomforge reads 'atomforge-checkpoint' versions 1\.\.3"):
        load_model(str(tmp_path / "checkpoint"))
    shutil.copytree(FIXTURE / "export", tmp_path / "export")
    config = json.loads((FIXTURE / "export" / "config.json").read_text())
    (tmp_path / "export" / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        load_model(str(tmp_path / "export"))


class _RunsCode:
    """Unpickling this would run `touch` through os.system: a checkpoint must never get that far."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_holding_code_is_refused_unrun(tmp_path):
    shutil.copytree(CHECKPOINT, tmp_path / "checkpoint")
    marker = tmp_path / "code-ran"
    torch.save({"step": 4, "model": _RunsCode(marker)}, tmp_path / "checkpoint" / ckpt.STATE_FILE)
    with pytest.raises(pickle.UnpicklingError):
        load_model(str(tmp_path / "checkpoint"))
    assert not marker.exists()
