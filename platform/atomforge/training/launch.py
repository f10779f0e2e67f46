"""Running a TrainConfig: checks in the driver, the resolved config, then the trainer in this process or on Ray Train.

    result = train(config)            # scaling.num_workers == 0: in this process, no Ray
                                      # else: a TorchTrainer on the connected Ray cluster
Before anything starts, `prepare` opens every task's manifest (a wrong URL, a graph the model
cannot use, a missing shard or a supervised objective on an unlabeled corpus fails here, naming the
task and file), takes the backbone from the init model when fine-tuning, and turns an epoch budget
into steps (`resolve_epochs`). The resolved config is what every worker runs and what
`<output>/config.json` and every checkpoint record.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from atomforge.artifacts.checkpoint import latest_checkpoint
from atomforge.objectives import ObjectiveMix
from atomforge.shards import open_shards
from atomforge.storage import filesystem
from atomforge.training.build import build_trainer, data_specs, load_init
from atomforge.training.checkpoints import RunDirectory
from atomforge.training.config import TrainConfig, check_amp, check_cutoffs, with_model
from atomforge.training.data import open_source, task_probabilities, task_splits
from atomforge.training.distributed import SingleProcess
from atomforge.training.hooks import Hook
from atomforge.training.overrides import to_jsonable


@dataclass(frozen=True)
class RunResult:
    """A finished run: its last metrics, the resolved config it ran and its steps per epoch (epoch budgets)."""

    metrics: dict[str, Any]
    config: TrainConfig
    steps_per_epoch: int | None = None


def check_output(config: TrainConfig, resume: bool) -> None:
    """Refuse to train into a run directory that already holds checkpoints unless resuming."""
    existing = latest_checkpoint(config.checkpoint.output)
    if existing and not resume:
        raise ValueError(f"{config.checkpoint.output} already holds checkpoints ({existing}); "
                         "pass --resume to continue it or choose another --output")


def write_resolved_config(config: TrainConfig) -> None:
    """`<output>/config.json`: the resolved config of the run (also inside every checkpoint)."""
    fs, root = filesystem(config.checkpoint.output)
    fs.makedirs(root, exist_ok=True)
    fs.pipe_file(f"{root}/config.json", json.dumps(to_jsonable(config), indent=2).encode())


def check_shards(name: str, url: str, shard_set, source, verify: bool) -> None:
    """ValueError naming the task and up to three shards that are missing, resized or (verify) altered."""
    shards = [s for split in source.files for s in shard_set.shards(split, "parquet", name)]
    problems = shard_set.missing(shards)
    if verify and not problems:
        problems = [f"{path} (sha256 differs from the manifest)" for path in shard_set.verify(shards)]
    if problems:
        raise ValueError(f"task {name!r}: {url}: {len(problems)} listed shards unusable, e.g. "
                         f"{'; '.join(problems[:3])}: rerun the preprocessing into a fresh output")


def prepare(config: TrainConfig, verify: bool = False) -> tuple[TrainConfig, list[str], dict[str, int]]:
    """(the resolved config, what the run will do without, training rows per task); raises on bad data.

    Every shard a task reads must exist with its listed size (`verify`: and its sha256); errors name
    the task and the file. Notes (also emitted as warnings) say what the run silently lacks, e.g. a
    stress term no task feeds.
    """
    pretrained = load_init(config)
    if pretrained is not None:
        config = with_model(config, pretrained.model.backbone_config)
    check_amp(config)
    check_cutoffs(config)
    sources, splits = {}, {}
    for name, task in config.data.tasks.items():
        try:
            sources[name] = open_source(task.dataset_name, task.url)
            shard_set = open_shards(task.url)
        except (ValueError, OSError) as error:
            raise ValueError(f"task {name!r}: {error}") from error
        if sources[name].num_rows(task.subset.pool if task.subset else config.data.train_split) == 0:
            raise ValueError(f"task {name!r}: {task.url} has no {config.data.train_split!r} rows")
        check_shards(task.dataset_name, task.url, shard_set, sources[name], verify)
        splits[name] = task_splits(sources[name], config.data, task)
    specs = data_specs(config, sources, splits, pretrained)
    notes = ObjectiveMix(list(config.objectives.values())).check_labels(specs)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    rows = {name: split["train"].num_rows for name, split in splits.items()}
    return resolve_epochs(config, rows), notes, rows


def check_data(config: TrainConfig, verify: bool = False) -> list[str]:
    """`prepare`'s checks alone: the notes, or the error naming the task and file."""
    return prepare(config, verify)[1]


def steps_per_epoch(config: TrainConfig, rows: Mapping[str, int]) -> int:
    """Optimizer steps in one epoch: one pass over the training rows `rows` of the non-replay tasks.

    batching "epochs" (one task): ceil(rows / (lanes · max_structures · grad_accum)), exact with one
    lane when `data.max_structures` (not the atom budget) ends the batches; with several lanes
    (`training.lanes`) each takes its own chunks of rows, so a lane's epoch may be a batch longer.
    batching "mixed": a step draws a share Σ p_d of downstream structures (`data.task_probabilities`),
    so an epoch is ceil(Σ N_d / (Σ p_d · lanes · max_structures · grad_accum)) steps, a pass in
    expectation. The same whatever number of workers an elastic run has."""
    if config.data.max_structures is None:
        raise ValueError("epochs: an epoch budget needs data.max_structures (the batch size in structures)")
    per_step = config.scaling.lanes * config.data.max_structures * config.optim.grad_accum
    downstream = config.downstream_tasks()
    if config.data.batching == "epochs":
        return max(1, math.ceil(rows[downstream[0]] / per_step))
    shares = task_probabilities(config.data, rows)
    return max(1, math.ceil(sum(rows[t] for t in downstream) / (sum(shares[t] for t in downstream) * per_step)))


def resolve_epochs(config: TrainConfig, rows: Mapping[str, int]) -> TrainConfig:
    """`config` with its epoch budget (if any) as steps: max_steps, warmup, validation, logging, checkpoints."""
    budget = config.epochs
    if budget is None:
        return config
    epoch = steps_per_epoch(config, rows)
    every = budget.checkpoint_every or budget.max_epochs
    return replace(config, max_steps=budget.max_epochs * epoch, val_every=budget.val_every * epoch, log_every=epoch,
                   optim=replace(config.optim, warmup_steps=budget.warmup_epochs * epoch),
                   checkpoint=replace(config.checkpoint, every_steps=every * epoch))


def process_device(config: TrainConfig) -> torch.device:
    """The device of a run in this process alone (no Ray): the current CUDA device when
    `scaling.use_gpu` (ValueError when torch sees none), else the CPU."""
    if not config.scaling.use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("scaling.use_gpu is set but torch sees no CUDA device")
    return torch.device("cuda", torch.cuda.current_device())


def train(config: TrainConfig, resume: bool = False, verify_data: bool = False, hooks: Sequence[Hook] = ()) -> RunResult:
    """Run `config` to completion: in this process (scaling.num_workers 0) or on the connected Ray cluster.

    `verify_data`: check every shard's sha256 before starting (reads all the data once). `hooks` run in
    every worker after the config's own (e.g. a test's fault injection; picklable for Ray workers).
    """
    config, _, rows = prepare(config, verify_data)
    check_output(config, resume)
    write_resolved_config(config)
    if config.scaling.num_workers == 0:
        sink = RunDirectory(config.checkpoint.output, config.checkpoint.num_to_keep)
        metrics = build_trainer(config, SingleProcess(), sink, hooks, process_device(config)).fit()
    else:
        from atomforge.training.ray_train import fit

        metrics = fit(config, hooks)
    epoch = steps_per_epoch(config, rows) if config.epochs else None
    return RunResult(dict(metrics), config, epoch)
