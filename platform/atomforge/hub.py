"""Model export and import: safetensors weights + config.json + a model card, to a folder or a model hub.

An export folder holds exactly:
    model.safetensors   the state dict (EMA weights by default), no pickle
    config.json         format version, the model's config_dict (architecture, task statistics),
                        per-task cutoff / K / energy convention / force mode / normalisers /
                        linear reference, and a summary of training (data, objectives, metrics)
    README.md           the model card (training data and objectives, metrics, intended use,
                        limitations, licence), with hub metadata in its YAML header

`load_pretrained(folder_or_hub_id)` reads them back with safetensors and json only and returns a
`PretrainedModel` (an AtomisticModel with `.calculator(task=...)`, an ASE calculator).
Hub uploads go through `huggingface_hub.HfApi` (create_repo + upload_folder); the token is passed
in by the caller (jobs/export.py reads HF_TOKEN) or, when None, the hub client's stored login is
used. The token is never printed or written.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from atomforge import __version__
from atomforge.finetune.pretrained import Pretrained, is_hub_id, load_source
from atomforge.models import AtomisticModel
from atomforge.tasks import TaskSpec

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
EXPORT_FILES = (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE)
FORMAT = "atomforge"
FORMAT_VERSION = 1
HUB_PREFIX = "hf://"


class PretrainedModel(AtomisticModel):
    """An AtomisticModel restored from an export, knowing each task's graph settings and force mode."""

    task_specs: dict[str, TaskSpec]
    force_modes: dict[str, str]

    def calculator(self, task: str | None = None, forces: str | None = None, device: str | torch.device = "cpu"):
        """An ASE calculator for `task` (default: the only or the first task); see atomforge.calculator."""
        from atomforge.calculator import AtomforgeCalculator

        name = task or self.tasks[0]
        if name not in self.tasks:
            raise ValueError(f"unknown task {name!r}; this model has {list(self.tasks)}")
        return AtomforgeCalculator(self, self.task_specs[name], forces or self.force_modes.get(name, "gradient"), device)


@dataclass
class ExportResult:
    """Where the export went: the local folder, the hub repo (or None) and the files written."""

    folder: Path
    repo_id: str | None
    files: dict[str, int]  # name -> bytes
    uploaded: bool


# ------------------------------------------------------------------ export
def hub_repo(target: str) -> str | None:
    """`hf://org/name` -> 'org/name'; None for a folder target."""
    if not target.startswith(HUB_PREFIX):
        return None
    repo_id = target[len(HUB_PREFIX):].strip("/")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"--to {target!r}: expected hf://ORG/NAME")
    return repo_id


def export(checkpoint: str, target: str, use_ema: bool = True, dry_run: bool = False, api=None,
           token: str | None = None, license_id: str = "apache-2.0") -> ExportResult:
    """Export `checkpoint` (run, checkpoint dir/URL, export folder or hub id) to a folder or `hf://org/name`.

    dry_run: write the folder (a temporary one for hub targets) and upload nothing.
    api: an object with HfApi's `create_repo` / `upload_folder` (default `huggingface_hub.HfApi`).
    """
    repo_id = hub_repo(target)
    source = load_source(checkpoint, use_ema)
    folder = Path(tempfile.mkdtemp(prefix="atomforge-export-")) if repo_id else Path(target)
    files = write_export(folder, source, license_id, repo_id or folder.name)
    uploaded = False
    if repo_id and not dry_run:
        upload(folder, repo_id, api, token, f"atomforge {__version__}: export of {source.source}")
        uploaded = True
    return ExportResult(folder, repo_id, files, uploaded)


def write_export(folder: Path, source: Pretrained, license_id: str, name: str) -> dict[str, int]:
    """Write the three export files into `folder`; returns their sizes in bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in source.model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt", "atomforge_version": __version__,
                                                           "weights": "ema" if source.ema else "model"})
    config = export_config(source)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    from atomforge.finetune.card import model_card

    (folder / CARD_FILE).write_text(model_card(config, name, license_id, sum(v.numel() for v in state.values())))
    return {f: (folder / f).stat().st_size for f in EXPORT_FILES}


def export_config(source: Pretrained) -> dict[str, Any]:
    """config.json: everything needed to rebuild and use the model, plus a training summary for the card."""
    tasks = {}
    for name, spec in source.specs.items():
        tasks[name] = {**{k: v for k, v in dataclasses.asdict(spec).items() if k != "name"},
                       "linear_reference": {str(z): v for z, v in spec.linear_reference.items()},
                       "forces": source.forces.get(name, "direct")}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "atomforge_version": __version__,
            "model": source.model.config_dict(), "tasks": tasks, "weights": "ema" if source.ema else "model",
            "source": source.source, "training": training_summary(source.meta)}


def training_summary(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Data, objectives and metrics from a pretraining or fine-tuning config (what the card shows)."""
    if meta.get("kind") == "finetune":
        return {"kind": "finetune", "recipe": meta.get("name"), "data": meta.get("data", {}),
                "target": meta.get("target", {}), "metrics": meta.get("metrics", {}),
                "optim": meta.get("optim", {}), "pretrained_from": meta.get("pretrained_from"),
                "pretraining": training_summary(meta["pretraining"]) if meta.get("pretraining") else None}
    tasks = (meta.get("data") or {}).get("tasks") or {}
    objectives = {name: {k: _objective_name(v) if k == "objective" else v for k, v in (entry or {}).items() if k != "_type"}
                  for name, entry in (meta.get("objectives") or {}).items()}
    return {"kind": "pretraining" if meta else "unknown", "recipe": meta.get("name"),
            "datasets": {t: (e or {}).get("url", "") for t, e in tasks.items()}, "objectives": objectives,
            "max_steps": meta.get("max_steps"), "optim": meta.get("optim", {})}


def _objective_name(value: Any) -> Any:
    """A run record's objective {"_type": "atomforge...JMPSupervised", settings...} -> {"name": "JMPSupervised", settings...}."""
    if isinstance(value, Mapping) and "_type" in value:
        return {"name": str(value["_type"]).rsplit(".", 1)[-1], **{k: v for k, v in value.items() if k != "_type"}}
    return value


def upload(folder: Path, repo_id: str, api, token: str | None, message: str) -> None:
    """create_repo (exist_ok) then upload_folder of exactly the export files."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", commit_message=message,
                      allow_patterns=list(EXPORT_FILES))


# ------------------------------------------------------------------ import
def export_folder(ref: str) -> Path:
    """A local export folder for `ref` (a folder, or a hub id downloaded with snapshot_download)."""
    if not is_hub_id(ref):
        folder = Path(ref)
        missing = [f for f in (WEIGHTS_FILE, CONFIG_FILE) if not (folder / f).exists()]
        if missing:
            raise ValueError(f"{ref}: not an atomforge export (missing {', '.join(missing)})")
        return folder
    from huggingface_hub import snapshot_download

    repo_id = ref[len(HUB_PREFIX):] if ref.startswith(HUB_PREFIX) else ref
    return Path(snapshot_download(repo_id=repo_id, allow_patterns=list(EXPORT_FILES)))


def load_export(ref: str) -> Pretrained:
    """Restore an export (folder or hub id) with safetensors + json only."""
    folder = export_folder(ref)
    config = json.loads((folder / CONFIG_FILE).read_text())
    if config.get("format") != FORMAT or int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{ref}: config.json format {config.get('format')!r} v{config.get('format_version')} "
                         f"is not atomforge v<={FORMAT_VERSION}")
    model = PretrainedModel.from_config_dict(config["model"])
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    model.eval()
    specs, forces = {}, {}
    for name, entry in config["tasks"].items():
        fields = {k: v for k, v in entry.items() if k in {f.name for f in dataclasses.fields(TaskSpec)}}
        fields["linear_reference"] = {int(z): float(v) for z, v in entry["linear_reference"].items()}
        specs[name] = TaskSpec(name, **fields)
        forces[name] = entry.get("forces", "direct")
    model.task_specs, model.force_modes = specs, forces
    meta = {"export": config, **(config.get("training") or {})}
    return Pretrained(model, specs, forces, meta, str(ref), config.get("weights") == "ema")


def load_pretrained(ref: str) -> PretrainedModel:
    """The model of an export folder or hub id (`org/name` or `hf://org/name`), in eval mode on CPU.

    `model.calculator(task=...)` gives an ASE calculator; `model.task_specs` the graph settings.
    """
    return load_export(str(ref)).model
