"""From a TrainConfig to a Trainer: sources, specs, the starting model, objective, optimizer, loaders, records, hooks.

The same function builds a pretraining and a fine-tuning run, on every rank (`build_trainer(config,
dist, sink)`); the Ray Train layer and in-process tests differ only in the `Distributed` and the
checkpoint sink they pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from atomforge.artifacts.pretrained import LEAST_SQUARES, Pretrained, reference_record, task_record
from atomforge.artifacts.reference import load_model
from atomforge.objectives import ObjectiveMix
from atomforge.tasks import TaskSpec
from atomforge.training.config import TaskData, TrainConfig
from atomforge.training.data import (
    Split,
    TaskSource,
    open_source,
    task_spec,
    task_splits,
    train_loader,
    validation_loaders,
)
from atomforge.training.distributed import Distributed, SingleProcess
from atomforge.training.hooks import EarlyStopping, Hook
from atomforge.training.initialization import initial_model, model_tasks
from atomforge.training.lanes import owned_lanes
from atomforge.training.optim import build_ema, build_optimizer, build_scheduler
from atomforge.training.trainer import Trainer, TrainerParts


def build_trainer(config: TrainConfig, dist: Distributed | None = None, sink=None, hooks: Sequence[Hook] = (),
                  device: torch.device | str = "cpu") -> Trainer:
    """A ready Trainer for `config` on this rank (`dist`; default one process), with the config's hooks
    (early stopping) before `hooks`."""
    dist = dist or SingleProcess()
    parts = build_parts(config, dist.rank, dist.world, torch.device(device))
    return Trainer(config, parts, dist, sink, [*config_hooks(config, parts), *hooks], device)


def config_hooks(config: TrainConfig, parts: TrainerParts) -> list[Hook]:
    """The hooks a config asks for: early stopping (with model selection)."""
    if config.early_stopping is None:
        return []
    stop = config.early_stopping
    tasks = (stop.task,) if stop.task else config.downstream_tasks()
    return [EarlyStopping([parts.specs[t] for t in tasks], stop.patience, [config.data.tasks[t].per_atom for t in tasks])]


def load_init(config: TrainConfig) -> Pretrained | None:
    """The pretrained model `config.init` names (EMA weights when asked and present), or None."""
    return load_model(config.init.source, config.init.use_ema) if config.init.source else None


def data_specs(config: TrainConfig, sources: Mapping[str, TaskSource], splits: Mapping[str, Mapping[str, Split]],
               pretrained: Pretrained | None) -> dict[str, TaskSpec]:
    """Each data task's spec with the statistics its TaskData asks for."""
    return {name: task_spec(task, sources[name], splits[name]["train"], pretrained)
            for name, task in config.data.tasks.items()}


def build_parts(config: TrainConfig, rank: int, world: int, device: torch.device) -> TrainerParts:
    """Everything `Trainer` needs for rank `rank` of `world` (1 <= world <= scaling.lanes; the rank's
    training batches are those of its lanes of the global batch, `training.lanes`)."""
    lanes = owned_lanes(rank, world, config.scaling.lanes)
    sources = {name: open_source(task.dataset_name, task.url) for name, task in config.data.tasks.items()}
    splits = {name: task_splits(sources[name], config.data, task) for name, task in config.data.tasks.items()}
    pretrained = load_init(config)
    specs = data_specs(config, sources, splits, pretrained)
    heads = sorted({head for entry in config.objectives.values() for head in entry.objective.heads})
    model = initial_model(config.model, specs, heads, config.seed, pretrained, config.init.keep_heads)
    trained = [name for name, task in config.data.tasks.items() if task.trainable_reference]
    if trained:
        model.train_references(trained)
    model = model.to(device)
    objective = ObjectiveMix(list(config.objectives.values()), model)
    notes = objective.check_labels(specs)
    ema = build_ema(model, config.optim.ema_decay)
    optimizer = build_optimizer(model, config.optim, objective.frozen_parameters(model))
    scheduler = build_scheduler(optimizer, config.max_steps, config.optim)
    all_specs = model_tasks(specs, pretrained, config.init.keep_heads)
    index = {name: model.tasks.index(name) for name in config.data.tasks}
    loader, probabilities = train_loader(config.data, sources, splits, specs, index, config.seed, lanes,
                                         config.scaling.lanes, config.optim.grad_accum, pin_memory=device.type == "cuda")
    return TrainerParts(
        model=model, objective=objective, specs=all_specs, optimizer=optimizer, scheduler=scheduler, ema=ema,
        train_loader=loader, val_loaders=validation_loaders(config.data, sources, splits, specs, index, rank, world),
        data_tasks=tuple(config.data.tasks), probabilities=probabilities,
        graph_params={name: source.graph for name, source in sources.items()},
        records=task_records(config, all_specs, objective, splits, pretrained), meta=run_meta(config, pretrained),
        notes=tuple(notes))


def task_records(config: TrainConfig, specs: Mapping[str, TaskSpec], objective: ObjectiveMix,
                 splits: Mapping[str, Mapping[str, Split]], pretrained: Pretrained | None) -> dict[str, dict]:
    """Each model task's record for checkpoints: spec, force mode and how its linear reference was obtained."""
    records = {}
    for name, spec in specs.items():
        task = config.data.tasks.get(name)
        if task is None:  # a kept pretraining task the run does not train on
            records[name] = task_record(spec, pretrained.forces.get(name, "direct"),
                                        reference_record("kept", **{"from": pretrained.source}))
            continue
        records[name] = task_record(spec, objective.force_mode, reference_of(task, spec, splits[name]["train"], pretrained))
    return records


def reference_of(task: TaskData, spec: TaskSpec, train: Split, pretrained: Pretrained | None) -> dict[str, Any]:
    """How a data task's linear reference was obtained (an `artifacts.pretrained` reference record); a
    trainable one records where it started (`initial`, `initial_values`), its values are the trained ones."""
    start = starting_reference(task, spec, train, pretrained)
    if not task.trainable_reference:
        return start
    values = {str(z): float(v) for z, v in sorted(spec.linear_reference.items())}
    return reference_record("trainable", initial=_described(start), initial_values=values)


def _described(record: Mapping[str, Any]) -> str:
    if record["mode"] == "kept":
        return f"the values kept from {record['from']}"
    if record["mode"] == "fitted":
        return f"{record['method']} on {record['fitted_on']}"
    return "zero"


def starting_reference(task: TaskData, spec: TaskSpec, train: Split, pretrained: Pretrained | None) -> dict[str, Any]:
    """How a data task's linear reference was obtained before any training."""
    if task.statistics == "pretrained":
        return reference_record("kept", **{"from": pretrained.source})
    if task.reference == "pretrained":
        return reference_record("kept", **{"from": f"{pretrained.source} task {task.reference_source!r}"})
    if not spec.linear_reference:
        return reference_record("none")
    if task.statistics == "manifest":
        return reference_record("fitted", fitted_on=f"the statistics of the shard dataset {task.url}",
                                method=f"{LEAST_SQUARES} (preprocessing pipeline)")
    subset = task.subset
    drawn = f", subset seed {subset.seed}" if subset is not None else ""
    method = LEAST_SQUARES if task.reference_fit == "least_squares" else "mean per atom of the training rows"
    return reference_record("fitted", method=method,
                            fitted_on=f"{task.url} split {train.name!r}: {train.num_rows} training structures{drawn}")


def run_meta(config: TrainConfig, pretrained: Pretrained | None) -> dict[str, Any]:
    """What a checkpoint records besides the config: the run's kind and starting point."""
    if pretrained is None:
        return {"kind": config.kind, "pretrained_from": None, "pretraining": None}
    return {"kind": config.kind, "pretrained_from": pretrained.source, "pretraining": pretrained.meta}
