"""Typed configuration of a training run (pretraining or fine-tuning): one dataclass per concern, validated where built.

A recipe (`atomforge.recipes.jmp`, `atomforge.recipes.finetune`) returns a whole `TrainConfig`;
`training.overrides.apply_overrides` changes a few fields from `--set a.b=value` strings. Pretraining
and fine-tuning differ only in what they set: fine-tuning starts from a pretrained model (`init`),
draws exact counts from its downstream shards (`TaskData.subset`), fits the task's statistics on
its training rows (`TaskData.statistics`), counts its budget in epochs (`epochs`), uses JMP's
layer-wise learning rates (`optim.layer_lr`) and stops early (`early_stopping`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from atomforge.objectives.mix import MixEntry
from atomforge.pipeline.label_stats import REFERENCE_FITS
from atomforge.tasks import TaskSpec

AMP_MODES = ("none", "bf16", "fp16")
BATCHINGS = ("mixed", "epochs")
STATISTICS = ("manifest", "train", "pretrained")
REFERENCES = ("statistics", "pretrained")
KINDS = ("pretraining", "finetune")

# JMP fine-tuning (OBJECTIVES.md §1): embedding 0.3, the six GemNet-OC blocks 0.55 ... 0.625, heads 1.
JMP_EMBEDDING_LR = 0.3
JMP_BLOCK_LR = (0.55, 0.40, 0.30, 0.40, 0.55, 0.625)


@dataclass(frozen=True)
class Subset:
    """Exact structure counts drawn from one split of a task's shards, seeded (rMD17: 950 / 50 / rest).

    A permutation seeded by `seed` of the `pool` split's rows gives num_train training rows, the next
    num_val validation rows, then num_test (None: all the rest) test rows; disjoint by construction.
    """

    num_train: int
    num_val: int
    num_test: int | None = None
    seed: int = 0
    pool: str = "train"

    def __post_init__(self) -> None:
        for name in ("num_train", "num_val"):
            if getattr(self, name) < 1:
                raise ValueError(f"subset.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_test is not None and self.num_test < 1:
            raise ValueError(f"subset.num_test must be >= 1 or None, got {self.num_test}")


@dataclass(frozen=True)
class TaskData:
    """One task: its spec (graph settings, normalisers, loss scales), its shards and how they are used.

    `url` is a shard dataset root (a manifest.json beside the shards), any fsspec URL; `dataset` the
    dataset name inside it (default: the task's name).
    `weight`: an explicit mixing weight; None = temperature sampling from the train-split size.
    `subset`: exact seeded counts instead of the shards' own splits (fine-tuning sets).
    `statistics`: where the normalisers and the linear reference come from: "manifest" (the shard
    dataset's, fitted by the pipeline on all its rows), "train" (fitted on the training rows this run
    uses, by `reference_fit`), "pretrained" (the init model's task of the same name, unchanged).
    `per_atom`: the energy label is an intensive property stored as N·value (preprocessed with
    `property_per_atom`): model selection and reports use the error per atom.
    `reference`: where the per-element linear reference comes from: "statistics" (with the rest of
    `statistics`: the manifest's, least squares / mean per atom on the training rows, or the pretrained
    task's) or "pretrained" (the init model's task `reference_task`, default this task's name, kept
    unchanged; needs statistics "train", which then fits the energy mean and spread around it).
    `trainable_reference`: the reference starts there and is trained with the model (an
    `nn.Parameter`, no weight decay); checkpoints and exports record the trained values.
    `replay`: pretraining data mixed into fine-tuning against forgetting (statistics "pretrained" and a
    `weight`): it keeps the pretrained head and statistics, is validated, and counts neither toward
    an epoch nor toward model selection.
    """

    spec: TaskSpec
    url: str = ""
    weight: float | None = None
    dataset: str = ""
    subset: Subset | None = None
    statistics: str = "manifest"
    reference_fit: str = "least_squares"
    per_atom: bool = False
    reference: str = "statistics"
    reference_task: str = ""
    trainable_reference: bool = False
    replay: bool = False

    @property
    def dataset_name(self) -> str:
        return self.dataset or self.spec.name

    def __post_init__(self) -> None:
        if self.weight is not None and not self.weight > 0:
            raise ValueError(f"task {self.spec.name!r}: field 'weight' must be positive, got {self.weight}")
        if self.statistics not in STATISTICS:
            raise ValueError(f"task {self.spec.name!r}: statistics must be one of {STATISTICS}, got {self.statistics!r}")
        if self.reference_fit not in REFERENCE_FITS:
            raise ValueError(f"task {self.spec.name!r}: reference_fit must be one of {REFERENCE_FITS}, "
                             f"got {self.reference_fit!r}")
        if self.reference not in REFERENCES:
            raise ValueError(f"task {self.spec.name!r}: reference must be one of {REFERENCES}, got {self.reference!r}")
        if self.reference == "pretrained" and self.statistics != "train":
            raise ValueError(f"task {self.spec.name!r}: reference 'pretrained' needs statistics 'train' (the energy "
                             f"mean and spread are fitted around the kept reference), got {self.statistics!r}")
        if self.replay and (self.statistics != "pretrained" or self.weight is None):
            raise ValueError(f"task {self.spec.name!r}: a replay task keeps the pretrained statistics and has a "
                             f"mixing weight (statistics 'pretrained', weight > 0), got {self.statistics!r}, "
                             f"weight {self.weight}")

    @property
    def reference_source(self) -> str:
        """The pretrained task whose linear reference `reference` "pretrained" keeps."""
        return self.reference_task or self.spec.name


@dataclass(frozen=True)
class DataConfig:
    """Per-task streams and how batches are made. Atom budgets are per micro-batch per worker.

    batching "mixed": the temperature mixer draws each structure's task (JMP), streams are endless;
    "epochs" (one task): batches of consecutive rows that end at each epoch's end, so an epoch is
    ceil(rows / max_structures) batches (fine-tuning's epochs). Replay tasks (`TaskData.replay`) take
    their weights' share of the draws and the other tasks share the rest by temperature (or by their
    own weights): see `training.data.task_probabilities`.
    """

    tasks: Mapping[str, TaskData] = field(default_factory=dict)
    temperature: float = 2.0  # JMP: p_t ∝ (N_t/ΣN)^(1/T)
    max_atoms: int = 2048  # atom budget of one micro-batch on one worker
    max_structures: int | None = None  # optional cap on structures per micro-batch
    chunk_rows: int = 512  # rows per shuffle unit (a slice of one shard file)
    shuffle_rows: int = 4096  # local shuffle window per worker (whole chunks, shuffled together)
    val_max_structures: int = 256  # per task, over all workers (a subset's val rows are all used); 0 disables
    num_workers: int = 0  # loader processes building batches ahead, per training worker (0: in the training process)
    train_split: str = "train"
    val_split: str = "val"
    batching: str = "mixed"

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"data.temperature must be positive, got {self.temperature}")
        for name in ("max_atoms", "chunk_rows", "shuffle_rows"):
            if getattr(self, name) <= 0:
                raise ValueError(f"data.{name} must be positive, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.batching not in BATCHINGS:
            raise ValueError(f"data.batching must be one of {BATCHINGS}, got {self.batching!r}")
        if self.batching == "epochs" and len(self.tasks) > 1:
            raise ValueError(f"data.batching 'epochs' reads one task, got {sorted(self.tasks)}; mix several tasks "
                             "with data.batching='mixed'")
        for key, task in self.tasks.items():
            if key != task.spec.name:
                raise ValueError(f"data.tasks[{key!r}] holds a spec named {task.spec.name!r}")


@dataclass(frozen=True)
class LayerLR:
    """Learning-rate multipliers by depth (JMP fine-tuning): the embedding (and other backbone parts
    outside the blocks), block i read off `blocks` at its relative depth, the heads."""

    embedding: float = JMP_EMBEDDING_LR
    blocks: tuple[float, ...] = JMP_BLOCK_LR
    heads: float = 1.0

    def __post_init__(self) -> None:
        if not self.blocks or min(self.blocks) <= 0 or self.embedding <= 0 or self.heads <= 0:
            raise ValueError("optim.layer_lr: learning-rate multipliers must be positive")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW + linear warmup from `warmup_start_factor`·lr, then cosine to `min_lr_factor`·lr (JMP).

    layer_lr: per-depth multipliers of lr (None: one lr for every parameter)."""

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    warmup_steps: int = 2000
    warmup_start_factor: float = 0.2
    min_lr_factor: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    ema_decay: float = 0.99  # 0 disables the EMA copy
    grad_accum: int = 1  # micro-batches per optimizer step
    layer_lr: LayerLR | None = None

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr}")
        if self.grad_accum < 1:
            raise ValueError(f"optim.grad_accum must be >= 1, got {self.grad_accum}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"optim.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class ScalingConfig:
    """Ray Train workers. num_workers=0 runs the trainer in the calling process (no Ray).

    Elastic (`min_workers` set): Ray Train runs min_workers..num_workers workers, as many as the
    cluster has room for; a run that loses workers restarts from its newest checkpoint on fewer
    (each restart is one of `max_failures`, so set it, -1 = unlimited) and grows back when
    resources return (checked every `resize_interval_s` s). The global batch is the same on every
    world size: it has `lanes` = num_workers lanes of `optim.grad_accum` micro-batches
    (`training.lanes`), and a smaller world runs several lanes per worker.
    """

    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    amp: str = "none"  # none | bf16 (autocast, CUDA or CPU) | fp16 (autocast + GradScaler, CUDA only)
    max_failures: int = 0  # worker-group failures Ray Train recovers from (restart from last checkpoint); -1 = any
    min_workers: int | None = None  # None: always num_workers; else elastic min_workers..num_workers
    resize_interval_s: float = 60.0  # elastic: how often Ray Train looks for room to grow the worker group

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"scaling.amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.num_workers < 0:
            raise ValueError(f"scaling.num_workers must be >= 0, got {self.num_workers}")
        if self.max_failures < -1:
            raise ValueError(f"scaling.max_failures must be >= 0 or -1 (unlimited), got {self.max_failures}")
        if self.min_workers is not None and not 1 <= self.min_workers <= self.num_workers:
            raise ValueError(f"scaling.min_workers must be in 1..num_workers ({self.num_workers}) or None, "
                             f"got {self.min_workers}")
        if self.resize_interval_s < 0:
            raise ValueError(f"scaling.resize_interval_s must be >= 0, got {self.resize_interval_s}")

    @property
    def world(self) -> int:
        """Training processes of a full-size run: the Ray Train workers (the most, when elastic), or this process."""
        return max(self.num_workers, 1)

    @property
    def lanes(self) -> int:
        """The global batch's lanes (`training.lanes`): one per worker of a full-size run."""
        return self.world

    @property
    def elastic(self) -> bool:
        return self.min_workers is not None and self.min_workers < self.num_workers


def worker_overrides(text: str) -> list[str]:
    """`--num-workers` as `--set` assignments: "N" a fixed group of N, "MIN..MAX" (e.g. 1..4) elastic."""
    low, sep, high = text.partition("..")
    try:
        bounds = (int(low), int(high)) if sep else (None, int(low))
    except ValueError:
        raise ValueError(f"--num-workers expects N or MIN..MAX (e.g. 1..4), got {text!r}") from None
    if sep and not 1 <= bounds[0] <= bounds[1]:
        raise ValueError(f"--num-workers {text}: need 1 <= MIN <= MAX")
    elastic = [] if bounds[0] is None else [f"scaling.min_workers={bounds[0]}"]
    return ["scaling.min_workers=None", f"scaling.num_workers={bounds[1]}", *elastic]


@dataclass(frozen=True)
class CheckpointConfig:
    """Where the run lives and how often it is checkpointed.

    `output` is the run directory (local path or fsspec URL such as s3://bucket/runs/name): Ray
    Train's storage_path is its parent and the run name its last component.
    """

    output: str = "runs/debug"
    every_steps: int = 100
    num_to_keep: int = 3

    def __post_init__(self) -> None:
        if self.every_steps <= 0:
            raise ValueError(f"checkpoint.every_steps must be positive, got {self.every_steps}")


@dataclass(frozen=True)
class InitConfig:
    """Where the weights start: fresh (`source` empty) or a pretrained model (any model reference:
    run directory, checkpoint, export folder, hub id; `atomforge.artifacts.reference`).

    keep_heads: keep every pretrained task's energy/force heads (trained weights and statistics);
    a data task named like a pretrained task then continues with its head. Otherwise only the data
    tasks get (new) heads. The backbone always comes from the source; pretraining-only heads
    (denoising, masking) are dropped, vector heads the objectives use start fresh.
    """

    source: str = ""
    use_ema: bool = True
    keep_heads: bool = False


@dataclass(frozen=True)
class EpochBudget:
    """A budget in epochs, turned into steps once the data is known (`training.launch.resolve_epochs`):
    max_steps, warmup, validation, logging and checkpoints. An epoch is one pass over the training
    rows of the non-replay tasks: exactly, with batching "epochs" (one task); in expectation with
    batching "mixed" (replay or several downstream tasks), where a step draws a share Σ p_d of
    downstream structures, so an epoch is ceil(Σ N_d / (Σ p_d · structures per step)) steps."""

    max_epochs: int
    warmup_epochs: int = 1
    val_every: int = 1  # epochs
    checkpoint_every: int | None = None  # epochs; None = only at the end

    def __post_init__(self) -> None:
        if self.max_epochs < 1 or self.val_every < 1 or self.warmup_epochs < 0:
            raise ValueError(f"epochs: need max_epochs >= 1, val_every >= 1, warmup_epochs >= 0, got {self}")


@dataclass(frozen=True)
class EarlyStopping:
    """Keep the weights with the best validation score; stop after `patience` validations without a
    better one (None: never stop). A task's score weighs its clean validation MAEs as its loss weighs
    the errors: λ_E·MAE_E/s_E + λ_F·MAE_F/s_F (the energy error per atom for a `TaskData.per_atom`
    property), dimensionless. The score selected on is `task`'s, or (`task` empty) the sum of the
    scores of every non-replay data task (`TrainConfig.downstream_tasks`): tasks in other units add."""

    patience: int | None = None
    task: str = ""

    def __post_init__(self) -> None:
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"early_stopping.patience must be >= 1 or None, got {self.patience}")


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run: pretraining, or fine-tuning from `init.source`.

    model: a backbone config dataclass (e.g. PaiNNConfig); with `init.source` the source's backbone
    replaces it. validate_at_start: validate the starting weights before the first step (step 0).
    kind: what the run is for (recorded in checkpoints and model cards; the trainer is the same).
    """

    name: str
    data: DataConfig
    model: Any
    objectives: Mapping[str, MixEntry]  # objective name -> entry (weight, probability, every)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    init: InitConfig = field(default_factory=InitConfig)
    epochs: EpochBudget | None = None
    early_stopping: EarlyStopping | None = None
    max_steps: int = 1000
    seed: int = 0
    log_every: int = 10
    val_every: int = 200
    validate_at_start: bool = False
    kind: str = "pretraining"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")
        if not self.objectives:
            raise ValueError("objectives: the mix is empty")
        for key, entry in self.objectives.items():
            if key != entry.objective.name:
                raise ValueError(f"objectives[{key!r}] holds objective {entry.objective.name!r}; key it by that name")
        if self.epochs is not None and all(task.replay for task in self.data.tasks.values()):
            raise ValueError("epochs: an epoch budget counts passes over the non-replay tasks; every task is replay")
        if self.early_stopping is not None and self.early_stopping.task and self.early_stopping.task not in self.data.tasks:
            raise ValueError(f"early_stopping.task {self.early_stopping.task!r} is not a data task {sorted(self.data.tasks)}")
        pretrained = [t for t, d in self.data.tasks.items() if d.statistics == "pretrained"]
        if pretrained and not self.init.keep_heads:
            raise ValueError(f"tasks {pretrained} keep the pretrained statistics, so their heads too: set init.keep_heads")

    def task_names(self) -> tuple[str, ...]:
        return tuple(self.data.tasks)

    def downstream_tasks(self) -> tuple[str, ...]:
        """The tasks an epoch passes over and model selection scores: every data task but replay ones."""
        return tuple(name for name, task in self.data.tasks.items() if not task.replay)


def check_amp(config: TrainConfig) -> None:
    """fp16 needs a GPU: its loss is scaled by CUDA's GradScaler (bf16 autocasts on the CPU as well).

    Checked on the whole config, not in ScalingConfig, so `--set` may give amp and use_gpu in any order."""
    if config.scaling.amp == "fp16" and not config.scaling.use_gpu:
        raise ValueError("scaling.amp=fp16 needs scaling.use_gpu=True (fp16 training scales its loss with CUDA's "
                         "GradScaler); on CPU use scaling.amp=bf16 or none")


def check_cutoffs(config: TrainConfig) -> None:
    """One cutoff owner: every task's graph cutoff (TaskSpec.cutoff, where batches are re-filtered
    and K-truncated) must equal the model's cutoff (where its envelope reaches 0).

    A larger task cutoff would be silently cut by the model (a 12 Å graph seen at 6 Å); a smaller
    one truncates every pair between the two cutoffs, where the envelope is not 0 (an energy
    jump at the task cutoff) and the K nearest are picked at a cutoff the model does not use.
    Recipes derive the tasks' cutoff from the model (`recipes.jmp.task_table(..., cutoff=...)`).
    """
    cutoff = float(config.model.cutoff)
    wrong = {name: task.spec.cutoff for name, task in config.data.tasks.items() if task.spec.cutoff != cutoff}
    if wrong:
        sets = " ".join(f"--set data.tasks.{name}.spec.cutoff={cutoff}" for name in wrong)
        raise ValueError(f"model cutoff {cutoff} Å differs from the graph cutoff of tasks {wrong}: the model would "
                         f"see other pairs than the graphs hold; make them equal ({sets}, or change model.cutoff)")


def with_model(config: TrainConfig, model: Any) -> TrainConfig:
    """`config` training `model` (a backbone config); tasks whose cutoff followed the old model's follow this one."""
    old = float(config.model.cutoff) if config.model is not None else None
    tasks = {name: replace(task, spec=replace(task.spec, cutoff=float(model.cutoff)))
             if old is None or task.spec.cutoff == old else task for name, task in config.data.tasks.items()}
    return replace(config, model=model, data=replace(config.data, tasks=tasks))


def absolute_local_paths(config: TrainConfig) -> TrainConfig:
    """The config with local data, output and init paths made absolute (URLs with a scheme and hub ids are kept).

    Ray Train workers do not run in the driver's working directory, so a relative path given on
    the command line or in a recipe must be resolved where it was written: in the driver.
    """

    def resolve(url: str) -> str:
        return url if not url or "://" in url else os.path.abspath(url)

    tasks = {name: replace(task, url=resolve(task.url)) for name, task in config.data.tasks.items()}
    source = config.init.source
    if source and os.path.exists(source):
        source = os.path.abspath(source)
    return replace(
        config,
        data=replace(config.data, tasks=tasks),
        checkpoint=replace(config.checkpoint, output=resolve(config.checkpoint.output)),
        init=replace(config.init, source=source),
    )
