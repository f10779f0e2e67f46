"""Export / import: safetensors + config.json + card, identical predictions, no pickle, hub uploads offline."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
from pathlib import Path

import atomforge
import numpy as np
import pytest
import torch
from atomforge.artifacts.export import EXPORT_FILES, export
from atomforge.artifacts.reference import load_model
from atomforge.batch import collate
from atomforge.corpora import read_corpus
from atomforge.finetune.run import run_variant
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]


class RecordingHubApi:
    """Stands in for huggingface_hub.HfApi: records what would be sent (files with their bytes)."""

    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        files = {p.name: p.read_bytes() for p in folder.iterdir() if p.name in kwargs["allow_patterns"]}
        self.calls.append(("upload_folder", {**kwargs, "files": files}))


def _molecules():
    from ase.build import molecule
    from atomforge.schema import from_ase

    return [from_ase(molecule(name), name) for name in ("CH3CH2OH", "H2O", "CH4")]


def test_export_load_identical_predictions_without_pickle(run_dir, tmp_path, monkeypatch):
    source = load_model(str(run_dir))
    result = export(source, str(tmp_path / "export"))
    assert set(result.files) == {"model.safetensors", "config.json", "README.md"}

    def no_pickle(*args, **kwargs):
        raise AssertionError("load_pretrained must not unpickle")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    model = atomforge.load_pretrained(str(tmp_path / "export"))
    monkeypatch.undo()
    assert model.tasks == source.model.tasks and model.force_modes == {"ani1x": "direct", "oc20": "direct"}
    assert model.task_specs["ani1x"].cutoff == 5.0 and model.task_specs["ani1x"].linear_reference[8] == -2041.0
    batch = collate(_molecules(), cutoff=5.0, max_neighbors=20, tasks=[0, 0, 0])
    for mode in ("direct", "gradient"):
        a = source.model(batch, forces=mode)
        b = model(batch, forces=mode)
        assert torch.equal(a.energy, b.energy) and torch.equal(a.forces, b.forces)
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["weights"] == "ema" and config["tasks"]["oc20"]["max_neighbors"] == 20
    assert config["training"]["objectives"]["jmp"]["objective"] == {"name": "JMPSupervised", "forces": "direct", "stress": False}
    card = (tmp_path / "export" / "README.md").read_text()
    for section in ("## Training data and objectives", "## Metrics", "## Intended use", "## Limitations", "## Licence"):
        assert section in card
    assert card.startswith("---\nlicense: apache-2.0\n")


def test_no_ema_exports_raw_weights(run_dir, tmp_path):
    export(load_model(str(run_dir)), str(tmp_path / "ema"))
    export(load_model(str(run_dir), use_ema=False), str(tmp_path / "raw"))
    ema, raw = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("ema", "raw"))
    key = "backbone.embedding.weight"
    assert torch.allclose(raw[key], ema[key] + 0.01)
    assert json.loads((tmp_path / "raw" / "config.json").read_text())["weights"] == "model"


def test_hub_upload_sends_export_files_and_never_the_token(run_dir, monkeypatch):
    api = RecordingHubApi()
    secret = "hf_" + "x" * 30
    result = export(load_model(str(run_dir)), "hf://atomforge-test/demo-model", api=api, token=secret)
    assert result.uploaded and result.repo_id == "atomforge-test/demo-model"
    (create, create_args), (upload, upload_args) = api.calls
    assert create == "create_repo" and create_args["repo_id"] == "atomforge-test/demo-model" and create_args["exist_ok"]
    assert upload == "upload_folder" and upload_args["repo_type"] == "model"
    assert set(upload_args["files"]) == {"model.safetensors", "config.json", "README.md"}
    assert json.loads(upload_args["files"]["config.json"])["format"] == "atomforge"
    assert all(secret.encode() not in data for data in upload_args["files"].values())
    dry = RecordingHubApi()
    result = export(load_model(str(run_dir)), "hf://atomforge-test/demo-model", api=dry, dry_run=True)
    assert not result.uploaded and dry.calls == [] and (result.folder / "model.safetensors").exists()
    with pytest.raises(ValueError, match="hf://ORG/NAME"):
        export(load_model(str(run_dir)), "hf://no-slash")


def test_real_client_offline_refuses_to_upload(run_dir, monkeypatch):
    import importlib

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(importlib.import_module("huggingface_hub.constants"), "HF_HUB_OFFLINE", True)
    with pytest.raises(Exception, match="(?i)offline"):  # the client's offline error type varies by version
        export(load_model(str(run_dir)), "hf://atomforge-test/offline", token="hf_dummy")


def test_load_pretrained_from_hub_id(run_dir, tmp_path, monkeypatch):
    import huggingface_hub

    export(load_model(str(run_dir)), str(tmp_path / "snapshot"))
    asked = {}

    def fake_snapshot_download(repo_id, allow_patterns):
        asked.update(repo_id=repo_id, allow_patterns=allow_patterns)
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = atomforge.load_pretrained("hf://atomforge-test/demo-model")
    assert asked == {"repo_id": "atomforge-test/demo-model", "allow_patterns": list(EXPORT_FILES)}
    assert model.tasks == ("ani1x", "oc20")


def test_export_cli_dry_run_does_not_print_token(run_dir, tmp_path):
    secret = "hf_" + "s" * 30
    cmd = [sys.executable, str(REPO / "jobs" / "export.py"), "--checkpoint", str(run_dir),
           "--to", "hf://atomforge-test/demo-model", "--dry-run"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                            env={**__import__("os").environ, "HF_TOKEN": secret, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dry run" in result.stdout and "model.safetensors" in result.stdout
    assert secret not in result.stdout + result.stderr
    staged = Path(result.stdout.strip().rsplit("staged in ", 1)[1])
    assert np.all([(staged / f).exists() for f in EXPORT_FILES])
    assert all(secret not in (staged / f).read_text(errors="ignore") for f in ("config.json", "README.md"))


def card_references(card: str) -> dict[str, tuple[str, str, dict[str, float]]]:
    """The model card's energy-reference table: task -> (mode, how obtained, {element symbol: eV/atom})."""
    section = card.split("## Energy references\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines()[4:]:
        task, mode, obtained, values = (cell.strip() for cell in line.strip("|").split("|"))
        pairs = [] if values == "(none)" else [v.split() for v in values.split(", ")]
        rows[task] = (mode, obtained, {symbol: float(value) for symbol, value in pairs})
    return rows


def test_pretrained_export_records_each_linear_reference_and_how_it_was_obtained(run_dir, tmp_path):
    source = load_model(str(run_dir))
    export(source, str(tmp_path / "export"))
    tasks = json.loads((tmp_path / "export" / "config.json").read_text())["tasks"]
    url = source.meta["data"]["tasks"]["ani1x"]["url"]
    assert tasks["ani1x"]["linear_reference"] == {"1": -13.6, "6": -1029.0, "8": -2041.0}
    assert tasks["ani1x"]["reference"]["mode"] == "fitted" and url in tasks["ani1x"]["reference"]["fitted_on"]
    assert tasks["oc20"]["linear_reference"] == {} and tasks["oc20"]["reference"] == {"mode": "none"}
    card = card_references((tmp_path / "export" / "README.md").read_text())
    assert card["ani1x"][0] == "fitted" and url in card["ani1x"][1]
    assert card["ani1x"][2] == {"H": -13.6, "C": -1029.0, "O": -2041.0}
    assert card["oc20"] == ("none", "no reference", {})


def lstsq_reference(rmd17_file, num_train: int, seed: int) -> dict[int, float]:
    """The least-squares per-element reference of the structures a Subset(num_train, ..., seed) trains on,
    from the raw file (the structures themselves), independently of the shards and the columnar fitter."""
    structures = list(read_corpus("rmd17", str(rmd17_file)))
    train = np.random.default_rng(seed).permutation(len(structures))[:num_train]
    elements = sorted({int(z) for s in structures for z in s.atomic_numbers})
    counts = np.array([[np.sum(structures[i].atomic_numbers == z) for z in elements] for i in train], dtype=float)
    energy = np.array([structures[i].energy for i in train])
    return dict(zip(elements, np.linalg.lstsq(counts, energy, rcond=None)[0]))


def test_finetuned_export_records_the_fitted_and_the_kept_linear_references(quick_config, pretrain_run, rmd17_file,
                                                                            tmp_path):
    config = dataclasses.replace(quick_config, init=dataclasses.replace(quick_config.init, keep_heads=True),
                                 epochs=dataclasses.replace(quick_config.epochs, max_epochs=1))
    summary = run_variant(config, str(pretrain_run), "pretrained", log=lambda line: None)
    export(load_model(str(Path(summary.output) / "best")), str(tmp_path / "export"))
    tasks = json.loads((tmp_path / "export" / "config.json").read_text())["tasks"]
    fitted = lstsq_reference(rmd17_file, 24, 0)  # lstsq on the same 24 training structures
    assert tasks["rmd17"]["linear_reference"] == {str(z): pytest.approx(v, abs=1e-6) for z, v in fitted.items()}
    url = config.data.tasks["rmd17"].url
    assert tasks["rmd17"]["reference"] == {
        "mode": "fitted", "fitted_on": f"{url} split 'train': 24 training structures, subset seed 0",
        "method": "least squares of energy on per-element atom counts"}
    pretrained = load_model(str(pretrain_run))
    assert tasks["ani1x"]["reference"] == {"mode": "kept", "from": pretrained.source}
    assert tasks["ani1x"]["linear_reference"] == {"1": -13.6, "6": -1029.0, "8": -2041.0}
    card = card_references((tmp_path / "export" / "README.md").read_text())
    assert card["rmd17"][0] == "fitted" and f"{url} split 'train'" in card["rmd17"][1]
    symbols = {"H": 1, "C": 6, "O": 8}
    assert card["rmd17"][2] == {s: pytest.approx(fitted[z], rel=1e-5) for s, z in symbols.items()}  # 6 digits in the card
    assert card["ani1x"] == ("kept", f"kept unchanged from `{pretrained.source}`", {"H": -13.6, "C": -1029.0, "O": -2041.0})
    text = (tmp_path / "export" / "README.md").read_text()
    assert "Fine-tuned (recipe `rmd17_debug`" in text and "24 train / 8 val structures, seed 0" in text
