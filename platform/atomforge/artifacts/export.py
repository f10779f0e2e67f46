"""Exports: the folder a model is published as (safetensors + config.json + model card), and its format versions.

An export folder holds exactly:
    model.safetensors   the state dict (EMA weights by default), no pickle
    config.json         format, format_version, the model's config_dict (architecture, task
                        statistics), one task record per task (`artifacts.pretrained`: cutoff, K,
                        energy convention, force mode, normalisers, per-element linear reference and
                        how it was obtained), which weights (ema | model), the source reference and a
                        summary of training (data, objectives, metrics)
    README.md           the model card (`artifacts.card`), with hub metadata in its YAML header
`export(source, target)` writes one to a folder or a hub repo (`hf://org/name`, uploaded through
`atomforge.hub`); `read_export` reads one back with safetensors and json only.

Format versions (FORMAT_VERSION is the one written):
    1  atomforge up to commit 36cbadb: task records without "reference"; backbones whose radial
       envelope multiplied the basis and whose energy mean was added per structure (read back with
       envelope="basis", mean_reference="structure": `pretrained.legacy_model`).
    2  every task record says how its linear reference was obtained ("reference").
`read_files` reads every version up to FORMAT_VERSION and upgrades config.json and the weights one
version at a time (`UPGRADES[v]`, v -> v+1), so callers only see the current layout. A newer
version is refused.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from atomforge import __version__, hub
from atomforge.artifacts.card import model_card
from atomforge.artifacts.pretrained import Pretrained, legacy_model, legacy_weights, restore, task_record
from atomforge.storage import download_files, filesystem

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
EXPORT_FILES = (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE)
FORMAT = "atomforge"
FORMAT_VERSION = 2


@dataclass
class ExportResult:
    """Where the export went: the local folder, the hub repo (or None) and the files written."""

    folder: Path
    repo_id: str | None
    files: dict[str, int]  # name -> bytes
    uploaded: bool


# ------------------------------------------------------------------ writing
def export(source: Pretrained, target: str, dry_run: bool = False, api=None, token: str | None = None,
           license_id: str = "apache-2.0") -> ExportResult:
    """Export a restored model (`artifacts.reference.load_model`) to a folder or `hf://org/name`.

    dry_run: write the folder (a temporary one for hub targets) and upload nothing.
    api: an object with HfApi's `create_repo` / `upload_folder` (default `huggingface_hub.HfApi`).
    """
    repo = hub.repo_id(target) if target.startswith(hub.HUB_PREFIX) else None
    folder = Path(tempfile.mkdtemp(prefix="atomforge-export-")) if repo else Path(target)
    files = write_export(folder, source, license_id, repo or folder.name)
    if repo and not dry_run:
        hub.upload(folder, repo, EXPORT_FILES, api, token, f"atomforge {__version__}: export of {source.source}")
    return ExportResult(folder, repo, files, bool(repo) and not dry_run)


def write_export(folder: Path, source: Pretrained, license_id: str, name: str) -> dict[str, int]:
    """Write the three export files into `folder`; returns their sizes in bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in source.model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt", "atomforge_version": __version__,
                                                           "weights": "ema" if source.ema else "model"})
    config = export_config(source)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    (folder / CARD_FILE).write_text(model_card(config, name, license_id, sum(v.numel() for v in state.values())))
    return {f: (folder / f).stat().st_size for f in EXPORT_FILES}


def export_config(source: Pretrained) -> dict[str, Any]:
    """config.json: everything needed to rebuild and use the model, plus a training summary for the card."""
    tasks = {name: task_record(spec, source.forces.get(name, "direct"), source.references.get(name, {"mode": "unrecorded"}))
             for name, spec in source.specs.items()}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "atomforge_version": __version__,
            "model": source.model.config_dict(), "tasks": tasks, "weights": "ema" if source.ema else "model",
            "source": source.source, "training": training_summary(source.meta)}


def training_summary(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Data, objectives and metrics from a pretraining or fine-tuning run config (what the card shows)."""
    if "export" in meta:  # the meta of a loaded export: already a summary
        return {k: v for k, v in meta.items() if k != "export"}
    if meta.get("kind") == "finetune" and "target" in meta:  # a fine-tuning config from before the one trainer
        return {"kind": "finetune", "recipe": meta.get("name"), "data": meta.get("data", {}),
                "target": meta.get("target", {}), "metrics": meta.get("metrics", {}),
                "optim": meta.get("optim", {}), "pretrained_from": meta.get("pretrained_from"),
                "pretraining": training_summary(meta["pretraining"]) if meta.get("pretraining") else None}
    tasks = (meta.get("data") or {}).get("tasks") or {}
    objectives = {name: {k: _objective_name(v) if k == "objective" else v for k, v in (entry or {}).items() if k != "_type"}
                  for name, entry in (meta.get("objectives") or {}).items()}
    summary = {"kind": "pretraining" if meta else "unknown", "recipe": meta.get("name"),
               "datasets": {t: (e or {}).get("url", "") for t, e in tasks.items()}, "objectives": objectives,
               "max_steps": meta.get("max_steps"), "optim": meta.get("optim", {})}
    if meta.get("kind") == "finetune":
        summary.update(kind="finetune", metrics=meta.get("metrics", {}), pretrained_from=meta.get("pretrained_from"),
                       subsets={t: _plain((e or {}).get("subset")) for t, e in tasks.items()},
                       pretraining=training_summary(meta["pretraining"]) if meta.get("pretraining") else None)
    return summary


def _plain(value: Any) -> Any:
    """A config record without its `_type` key (None stays None)."""
    return {k: v for k, v in value.items() if k != "_type"} if isinstance(value, Mapping) else value


def _objective_name(value: Any) -> Any:
    """A run record's objective {"_type": "atomforge...JMPSupervised", settings...} -> {"name": "JMPSupervised", settings...}."""
    if isinstance(value, Mapping) and "_type" in value:
        return {"name": str(value["_type"]).rsplit(".", 1)[-1], **{k: v for k, v in value.items() if k != "_type"}}
    return value


# ------------------------------------------------------------------ reading
def read_files(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config.json, weights) of a local export folder of any supported version, upgraded to the current layout."""
    missing = [f for f in (WEIGHTS_FILE, CONFIG_FILE) if not (folder / f).exists()]
    if missing:
        raise ValueError(f"{folder}: not an atomforge export (missing {', '.join(missing)})")
    config = json.loads((folder / CONFIG_FILE).read_text())
    version = int(config.get("format_version", 0))
    if config.get("format") != FORMAT or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"{folder / CONFIG_FILE}: format {config.get('format')!r} version {config.get('format_version')}; "
                         f"this atomforge reads {FORMAT!r} versions 1..{FORMAT_VERSION} (upgrade atomforge)")
    weights = load_file(str(folder / WEIGHTS_FILE))
    for step in range(version, FORMAT_VERSION):
        config, weights = UPGRADES[step](config, weights)
    return config, weights


def read_export(folder: Path, source: str) -> Pretrained:
    """The model of a local export folder (safetensors + json only); `source`: the reference it came from."""
    config, weights = read_files(folder)
    meta = {"export": config, **(config.get("training") or {})}
    return restore(config["model"], weights, config["tasks"], meta=meta, source=source, ema=config.get("weights") == "ema")


def upgrade_v1(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Version 1 -> 2: version 1 did not record how linear references were obtained; its model and
    weights are made explicit as version-1 code computed them (`pretrained.legacy_model`, `legacy_weights`)."""
    tasks = {name: {"reference": {"mode": "unrecorded"}, "mean_reference": "structure", **record}
             for name, record in config["tasks"].items()}
    return {**config, "format_version": 2, "model": legacy_model(config["model"]), "tasks": tasks}, legacy_weights(weights)


Upgrade = Callable[[dict[str, Any], dict[str, torch.Tensor]], tuple[dict[str, Any], dict[str, torch.Tensor]]]
UPGRADES: dict[int, Upgrade] = {1: upgrade_v1}


def is_export(url: str) -> bool:
    """True when `url` (local or fsspec) holds an export's weights and config.json."""
    fs, root = filesystem(url)
    return fs.exists(f"{root}/{WEIGHTS_FILE}") and fs.exists(f"{root}/{CONFIG_FILE}")


def download(url: str, local: Path) -> Path:
    """Copy an export folder (any fsspec URL) to a local folder."""
    return download_files(url, EXPORT_FILES, local)
