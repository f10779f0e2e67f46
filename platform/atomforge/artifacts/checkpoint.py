"""Training checkpoints: the directory layout, its format versions, and copying them to and from storage.

One directory per checkpoint, `checkpoint_{step:08d}`, in a run directory (local or any fsspec URL):
    state.pt     torch.save of the training state: format, format_version, step, world_size (the
                 ranks that wrote it), lanes (of the global batch: `training.lanes`), model, ema,
                 optimizer, scheduler, scaler, mixers (every lane's loader state, in lane order), torch_rng.
                 Tensors, containers and numbers only: read with torch.load(weights_only=True), so
                 reading a checkpoint never runs code. Written last (via a rename): a checkpoint is
                 complete once state.pt exists.
    config.json  the resolved config of the run (TrainConfig, or a fine-tuning config with metrics)
    model.json   the model's config_dict (architecture, task statistics), to rebuild the model
    tasks.json   task name -> task record (`artifacts.pretrained`): graph settings, force mode,
                 linear reference and how it was obtained
With Ray Train workers the directory is reported through `ray.train.report` and persisted by Ray
to `<storage_path>/<name>/`; Ray's local mode (num_workers=0) persists nothing, so there the same
directory is copied to the run's output here (`upload`), and found again by `latest_checkpoint`.

Format versions (FORMAT_VERSION is the one written):
    1  atomforge up to commit 36cbadb: no version recorded, no tasks.json (task settings live only
       in the run config: pretraining under data.tasks.<name>.spec, fine-tuning under task_specs),
       models whose radial envelope multiplied the basis and whose energy mean was added per
       structure (read back with envelope="basis", mean_reference="structure": `pretrained.legacy_model`).
    2  state.pt records format and format_version; tasks.json holds every task's record.
    3  state.pt records `lanes`; `mixers` is per lane (a version-2 run had one lane per rank, so its
       per-rank mixers are its lanes: lanes = world_size).
`read_checkpoint` reads every version up to FORMAT_VERSION: the files as written, then the upgrade
of each version to the next (`UPGRADES[v]`, pure functions of the JSON and the state) until the
current one, so callers only ever see the current layout. A newer version is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from atomforge.artifacts.pretrained import (
    LEAST_SQUARES,
    legacy_model,
    legacy_weights,
    read_task_records,
    reference_record,
    task_record,
    with_model_statistics,
)
from atomforge.storage import download_files, filesystem

FORMAT = "atomforge-checkpoint"
FORMAT_VERSION = 3
STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
TASKS_FILE = "tasks.json"
FILES = (STATE_FILE, CONFIG_FILE, MODEL_FILE, TASKS_FILE)
_NAME = re.compile(r"checkpoint_(\d{8})$")


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint as read: state (training state), config (run config), model (config_dict or
    None), tasks (task records) and the format version it was written in (before any upgrade)."""

    state: dict[str, Any]
    config: dict[str, Any]
    model: dict[str, Any] | None
    tasks: dict[str, dict[str, Any]]
    written_version: int


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:08d}"


def write_checkpoint(directory: Path, state: Mapping[str, Any], config_json: dict, model_json: dict | None,
                     tasks: Mapping[str, dict] | None = None) -> Path:
    """Write one checkpoint (current format) into a local `directory`.

    tasks: task records (artifacts.pretrained.task_record); None infers them from the run config
    and the model's statistics, as for a version-1 checkpoint (pretraining runs today).
    """
    directory.mkdir(parents=True, exist_ok=True)
    records = dict(tasks) if tasks is not None else task_records_from_config(config_json, model_json)
    (directory / CONFIG_FILE).write_text(json.dumps(config_json, indent=2))
    if model_json is not None:
        (directory / MODEL_FILE).write_text(json.dumps(model_json, indent=2))
    (directory / TASKS_FILE).write_text(json.dumps(records, indent=2))
    versioned = {**state, "format": FORMAT, "format_version": FORMAT_VERSION}
    torch.save(versioned, directory / (STATE_FILE + ".tmp"))
    (directory / (STATE_FILE + ".tmp")).rename(directory / STATE_FILE)  # complete once state.pt exists
    return directory


def read_checkpoint(directory: str | Path) -> Checkpoint:
    """A local checkpoint directory of any supported version, upgraded to the current layout."""
    directory = Path(directory)
    if not (directory / STATE_FILE).exists():
        raise ValueError(f"{directory}: no {STATE_FILE}; not a (complete) checkpoint")
    # weights_only: tensors, containers and numbers only; a checkpoint never executes code when read.
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    version = int(state.get("format_version", 1))
    if version > FORMAT_VERSION or state.get("format", FORMAT) != FORMAT:
        raise ValueError(f"{directory / STATE_FILE}: checkpoint format {state.get('format')!r} version {version}; "
                         f"this atomforge reads {FORMAT!r} versions 1..{FORMAT_VERSION} (upgrade atomforge)")
    checkpoint = Checkpoint(state, _json(directory / CONFIG_FILE) or {}, _json(directory / MODEL_FILE),
                            _json(directory / TASKS_FILE) or {}, version)
    for step in range(version, FORMAT_VERSION):
        checkpoint = UPGRADES[step](checkpoint)
    return checkpoint


def read_state(directory: str | Path) -> dict[str, Any]:
    """The training state of a local checkpoint directory (any supported version)."""
    return read_checkpoint(directory).state


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


# ------------------------------------------------------------------ versions
def upgrade_v1(checkpoint: Checkpoint) -> Checkpoint:
    """Version 1 -> 2: record the version; the model and weights as version-1 code computed them
    (`legacy_model`, `legacy_weights`); task records inferred from the run config. The optimizer
    state is kept as written: it has no entries for parameters added since version 1, so a
    version-1 checkpoint restores a model (fine-tuning, export, calculator), not a resumed run."""
    state = {**checkpoint.state, "format": FORMAT, "format_version": 2, "model": legacy_weights(checkpoint.state["model"])}
    if checkpoint.state.get("ema") is not None:
        state["ema"] = legacy_weights(checkpoint.state["ema"], prefix="module.")
    model = None if checkpoint.model is None else legacy_model(checkpoint.model)
    return replace(checkpoint, state=state, model=model, tasks=task_records_from_config(checkpoint.config, model))


def upgrade_v2(checkpoint: Checkpoint) -> Checkpoint:
    """Version 2 -> 3: a version-2 run's rank r read what lane r reads now, so its lanes are its ranks."""
    state = {**checkpoint.state, "format_version": 3, "lanes": int(checkpoint.state.get("world_size", 1))}
    return replace(checkpoint, state=state)


UPGRADES: dict[int, Callable[[Checkpoint], Checkpoint]] = {1: upgrade_v1, 2: upgrade_v2}


def task_records_from_config(config: Mapping[str, Any], model_json: Mapping[str, Any] | None) -> dict[str, dict]:
    """Task records of a model from its run config, where the checkpoint did not record them.

    Specs: fine-tuning configs keep them under `task_specs`, pretraining configs under
    data.tasks.<name>.spec; statistics come from model.json (the model's buffers). Force modes: the
    fine-tuning record's, else "gradient" when a pretraining objective trained gradient forces.
    References: a fine-tuning run fitted its new task's on its train split and kept the others; a
    pretraining run used its shard datasets' statistics (the pipeline's least-squares fit).
    """
    if model_json is None:
        return {}
    recorded = {name: entry["spec"] for name, entry in ((config.get("data") or {}).get("tasks") or {}).items()
                if isinstance(entry, Mapping) and isinstance(entry.get("spec"), Mapping)}
    recorded.update({name: spec for name, spec in (config.get("task_specs") or {}).items() if isinstance(spec, Mapping)})
    specs, _, _ = read_task_records({t: {"cutoff": model_json["backbone"]["cutoff"], **recorded.get(t, {})}
                                     for t in model_json["tasks"]})
    stats = model_json["task_statistics"]
    forces = _forces_from_config(config, model_json["tasks"])
    return {t: task_record(with_model_statistics(spec, stats[t]), forces[t], _reference_from_config(config, t, stats[t]))
            for t, spec in specs.items()}


def _forces_from_config(config: Mapping[str, Any], tasks) -> dict[str, str]:
    """The fine-tuning record's force modes, else one mode for all tasks from the pretraining objective mix."""
    if isinstance(config.get("forces"), Mapping):
        return {t: str(config["forces"].get(t, "direct")) for t in tasks}
    entries = (config.get("objectives") or {}).values()
    objectives = [e.get("objective") for e in entries if isinstance(e, Mapping) and isinstance(e.get("objective"), Mapping)]
    gradient = any(o.get("_type", "").endswith(".DerivativeForceField") or o.get("forces") == "gradient" for o in objectives)
    return dict.fromkeys(tasks, "gradient" if gradient else "direct")


def _reference_from_config(config: Mapping[str, Any], task: str, stats: Mapping[str, Any]) -> dict[str, Any]:
    """How task `task`'s linear reference was obtained, by the rules of the code that wrote `config`."""
    if config.get("kind") == "finetune":
        target, data = config.get("target") or {}, config.get("data") or {}
        if task != target.get("task"):
            return reference_record("kept", **{"from": config.get("pretrained_from") or "(not recorded)"})
        mean = target.get("kind") == "property" and target.get("pooling") == "mean"
        return reference_record("fitted", fitted_on=f"{data.get('path')} train split ({data.get('num_train')} "
                                f"structures, split seed {data.get('seed')})",
                                method="mean per atom of the train split" if mean else LEAST_SQUARES)
    if not stats.get("linear_reference"):
        return reference_record("none")
    url = (((config.get("data") or {}).get("tasks") or {}).get(task) or {}).get("url", "(not recorded)")
    return reference_record("fitted", fitted_on=f"the statistics of the shard dataset {url}",
                            method=f"{LEAST_SQUARES} (preprocessing pipeline)")


# ------------------------------------------------------------------ storage
def latest_checkpoint(output: str) -> str | None:
    """URL of the newest complete `checkpoint_*` directory under a run's output, or None."""
    fs, root = filesystem(output)
    if not fs.exists(root):
        return None
    fs.invalidate_cache(root)
    steps = []
    for entry in fs.ls(root, detail=False):
        match = _NAME.search(entry.rstrip("/"))
        if match and fs.exists(f"{entry.rstrip('/')}/{STATE_FILE}"):
            steps.append((int(match.group(1)), entry.rstrip("/")))
    if not steps:
        return None
    path = max(steps)[1]
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def is_checkpoint(url: str) -> bool:
    """True when `url` (local or fsspec) is a complete checkpoint directory."""
    fs, root = filesystem(url)
    return fs.exists(f"{root}/{STATE_FILE}")


def download(url: str, local: Path) -> Path:
    """Copy a checkpoint directory (any fsspec URL) to a local folder."""
    return download_files(url, FILES, local)


def upload(local: Path, output: str, name: str, num_to_keep: int) -> None:
    """Persist a local checkpoint directory as `<output>/<name>` and keep the newest `num_to_keep`."""
    fs, root = filesystem(output)
    fs.makedirs(root, exist_ok=True)
    target = f"{root}/{name}"
    fs.makedirs(target, exist_ok=True)
    for path in sorted(local.iterdir(), key=lambda p: p.name == STATE_FILE):  # state.pt last
        fs.put_file(str(path), f"{target}/{path.name}")
    fs.invalidate_cache(root)
    existing = sorted(e.rstrip("/") for e in fs.ls(root, detail=False) if _NAME.search(e.rstrip("/")))
    for old in existing[:-num_to_keep] if num_to_keep > 0 else []:
        fs.rm(old, recursive=True)
