"""A restored model and its task records: what every checkpoint and export says about each task.

A task record (JSON, in a checkpoint's tasks.json and an export's config.json under "tasks") is
one task's TaskSpec fields (cutoff Å, K, energy convention, normalisers, loss scales, per-element
linear reference in eV per atom, keys = atomic numbers as strings), its force mode and how its
linear reference was obtained:
    {"mode": "fitted", "fitted_on": "<data and split>", "method": "<how>"}  least squares on the
                                                       training split named there
    {"mode": "kept", "from": "<reference of the pretrained model>"}         unchanged from pretraining
    {"mode": "trainable", "initial": "<how it started>"}                    trained with the model; the
                                                       recorded values are the trained ones
    {"mode": "none"}                                   no reference (all zeros)
    {"mode": "unrecorded"}                             an older artifact that did not say
The statistics of a restored model's specs (normalisers, linear reference) are read from its
weights (the buffers the model de-normalises with), so the specs and the predictions never disagree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from atomforge.models import AtomisticModel
from atomforge.tasks import TaskSpec

REFERENCE_MODES = ("fitted", "kept", "trainable", "none", "unrecorded")
LEAST_SQUARES = "least squares of energy on per-element atom counts"
_SPEC_FIELDS = {f.name for f in dataclasses.fields(TaskSpec)} - {"name"}


class PretrainedModel(AtomisticModel):
    """An AtomisticModel restored from an artifact, knowing each task's graph settings and force mode."""

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
class Pretrained:
    """A restored model with what it was trained on.

    model: weights loaded (EMA when asked and present), eval mode; specs: task name -> TaskSpec;
    forces: task name -> "direct" | "gradient"; references: task name -> reference record (module
    doc); meta: the source's recorded config (training or fine-tuning config, metrics) for model
    cards; source: the reference it was loaded from; ema: whether the weights are the EMA copy.
    """

    model: PretrainedModel
    specs: dict[str, TaskSpec]
    forces: dict[str, str] = field(default_factory=dict)
    references: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    ema: bool = False


def reference_record(mode: str, **details: Any) -> dict[str, Any]:
    """{"mode": mode, **details} after checking the mode (see the module doc for each mode's details)."""
    if mode not in REFERENCE_MODES:
        raise ValueError(f"linear reference mode must be one of {REFERENCE_MODES}, got {mode!r}")
    return {"mode": mode, **details}


def task_record(spec: TaskSpec, forces: str, reference: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON record of one task (module doc)."""
    record = {k: v for k, v in dataclasses.asdict(spec).items() if k != "name"}
    record["linear_reference"] = {str(z): float(v) for z, v in sorted(spec.linear_reference.items())}
    return {**record, "forces": forces, "reference": reference_record(**reference)}


def with_references(records: Mapping[str, Mapping[str, Any]], model_json: Mapping[str, Any],
                    table: torch.Tensor) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(task records, model config_dict) whose linear references are the rows of `table` (the weights'
    `linear_reference`, tasks × elements, eV per atom): what a trainable reference was trained to."""
    tasks = list(model_json["tasks"])
    rows = {name: {z: float(v) for z, v in enumerate(table[i].tolist()) if v != 0.0} for i, name in enumerate(tasks)}
    records = {name: {**record, "linear_reference": {str(z): v for z, v in rows[name].items()}} if name in rows
               else dict(record) for name, record in records.items()}
    stats = {name: {**entry, "linear_reference": rows[name]} for name, entry in model_json["task_statistics"].items()}
    return records, {**model_json, "task_statistics": stats}


def read_task_records(records: Mapping[str, Mapping[str, Any]]
                      ) -> tuple[dict[str, TaskSpec], dict[str, str], dict[str, dict[str, Any]]]:
    """(specs, force modes, reference records) from task records; unknown keys are ignored."""
    specs, forces, references = {}, {}, {}
    for name, record in records.items():
        fields = {k: v for k, v in record.items() if k in _SPEC_FIELDS}
        fields["linear_reference"] = {int(z): float(v) for z, v in record.get("linear_reference", {}).items()}
        if fields.get("labels") is not None:
            fields["labels"] = tuple(fields["labels"])  # a JSON list
        specs[name] = TaskSpec(name, **fields)
        forces[name] = str(record.get("forces", "direct"))
        references[name] = reference_record(**record.get("reference", {"mode": "unrecorded"}))
    return specs, forces, references


def with_model_statistics(spec: TaskSpec, stats: Mapping[str, Any]) -> TaskSpec:
    """`spec` with one task's statistics from a model's config_dict (`task_statistics[name]`)."""
    return dataclasses.replace(
        spec, energy_mean=float(stats["energy_mean"]), energy_std=float(stats["energy_std"]),
        force_std=float(stats["force_std"]), mean_reference=stats["mean_reference"],
        linear_reference={int(z): float(v) for z, v in stats["linear_reference"].items()})


def legacy_model(model_json: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 model config_dict with what version-1 code computed made explicit: the radial
    envelope on the basis (`models.radial.radial_features`) and each task's energy mean added once
    per structure (`TaskSpec.mean_reference`)."""
    stats = {t: {"mean_reference": "structure", **s} for t, s in model_json["task_statistics"].items()}
    return {**model_json, "backbone": {"envelope": "basis", **model_json["backbone"]}, "task_statistics": stats}


def legacy_weights(weights: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Version-1 weights (keys under `prefix`) with the parameters added since at their initial values:
    the graph embedding head's LayerNorm after pooling (1ac9e83) as weight 1, bias 0. Only SCD's
    condition passes through it (energies, forces and stresses never do); the old head had no norm
    there, so a version-1 model's graph embedding is now the normalised one."""
    out = dict(weights)
    graph, norm = f"{prefix}embedding_head.graph.0.weight", f"{prefix}embedding_head.pooled_norm"
    if graph in out and f"{norm}.weight" not in out:
        dim, dtype = out[graph].shape[1], out[graph].dtype
        out[f"{norm}.weight"], out[f"{norm}.bias"] = torch.ones(dim, dtype=dtype), torch.zeros(dim, dtype=dtype)
    return out


def restore(model_config: Mapping[str, Any], weights: Mapping[str, torch.Tensor],
            records: Mapping[str, Mapping[str, Any]], **recorded: Any) -> Pretrained:
    """A Pretrained from a model config_dict, its state dict and its task records (statistics from the weights).

    recorded: meta, source and ema of the Pretrained.
    """
    model = PretrainedModel.from_config_dict(model_config)
    missing = [t for t in model.tasks if t not in records]
    if missing:
        raise ValueError(f"{recorded.get('source', 'artifact')}: no task record for {missing} (model tasks {list(model.tasks)})")
    model.load_state_dict(dict(weights))
    model.eval()
    specs, forces, references = read_task_records({t: records[t] for t in model.tasks})
    stats = model.config_dict()["task_statistics"]
    specs = {name: with_model_statistics(spec, stats[name]) for name, spec in specs.items()}
    model.task_specs, model.force_modes = specs, forces
    return Pretrained(model, specs, forces, references, **recorded)
