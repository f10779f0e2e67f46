"""Typed configuration of a pretraining run: one dataclass per concern, validated where built.

A recipe (`atomforge.recipes.jmp`) returns a whole `TrainConfig`; `apply_overrides` changes a few
fields from `--set a.b=value` strings, with the value converted to the field's declared type and an
error naming the path when a field does not exist. `to_jsonable` renders the resolved config that
is written next to every output and inside every checkpoint.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from atomforge.objectives.mix import MixEntry
from atomforge.tasks import TaskSpec

AMP_MODES = ("none", "bf16", "fp16")
FAULT_MODES = ("raise", "kill")


@dataclass(frozen=True)
class TaskData:
    """One pretraining task: its spec (graph settings, normalisers, loss scales) and its shards.

    `url` is a shard dataset root (a manifest.json beside the shards), any fsspec URL.
    `weight`: an explicit mixing weight; None = temperature sampling from the train-split size.
    """

    spec: TaskSpec
    url: str = ""
    weight: float | None = None

    def __post_init__(self) -> None:
        if self.weight is not None and not self.weight > 0:
            raise ValueError(f"task {self.spec.name!r}: field 'weight' must be positive, got {self.weight}")


@dataclass(frozen=True)
class DataConfig:
    """Per-task streams and the mixer. Atom budgets are per micro-batch per worker."""

    tasks: Mapping[str, TaskData] = field(default_factory=dict)
    temperature: float = 2.0  # JMP: p_t ∝ (N_t/ΣN)^(1/T)
    max_atoms: int = 2048  # atom budget of one micro-batch on one worker
    max_structures: int | None = None  # optional cap on structures per micro-batch
    chunk_rows: int = 512  # rows per shuffle unit (a slice of one shard file)
    shuffle_rows: int = 4096  # local shuffle window per worker (whole chunks, shuffled together)
    val_max_structures: int = 256  # per task, over all workers; 0 disables validation
    num_workers: int = 0  # loader processes building batches ahead, per training worker (0: in the training process)
    train_split: str = "train"
    val_split: str = "val"

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"data.temperature must be positive, got {self.temperature}")
        for name in ("max_atoms", "chunk_rows", "shuffle_rows"):
            if getattr(self, name) <= 0:
                raise ValueError(f"data.{name} must be positive, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        for key, task in self.tasks.items():
            if key != task.spec.name:
                raise ValueError(f"data.tasks[{key!r}] holds a spec named {task.spec.name!r}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW + linear warmup from `warmup_start_factor`·lr, then cosine to `min_lr_factor`·lr (JMP)."""

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    warmup_steps: int = 2000
    warmup_start_factor: float = 0.2
    min_lr_factor: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    ema_decay: float = 0.99  # 0 disables the EMA copy
    grad_accum: int = 1  # micro-batches per optimizer step

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr}")
        if self.grad_accum < 1:
            raise ValueError(f"optim.grad_accum must be >= 1, got {self.grad_accum}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"optim.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class ScalingConfig:
    """Ray Train workers. num_workers=0 runs the loop in the driver (Ray Train local mode)."""

    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    amp: str = "none"  # none | bf16 (autocast, CUDA or CPU) | fp16 (autocast + GradScaler, CUDA only)
    max_failures: int = 0  # worker failures Ray Train recovers from (restart from last checkpoint)

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"scaling.amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.num_workers < 0:
            raise ValueError(f"scaling.num_workers must be >= 0, got {self.num_workers}")


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
class FaultConfig:
    """Failure injection for recovery tests: fail once when reaching `at_step` (then never again)."""

    at_step: int | None = None
    rank: int = -1  # -1 = the last rank
    mode: str = "raise"  # raise an exception | kill the worker process (SIGKILL)

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"fault.mode must be one of {FAULT_MODES}, got {self.mode!r}")


@dataclass(frozen=True)
class TrainConfig:
    """A whole pretraining run."""

    name: str
    data: DataConfig
    model: Any  # a backbone config dataclass (e.g. atomforge.models.painn.PaiNNConfig)
    objectives: Mapping[str, MixEntry]  # objective name -> entry (weight, probability, every)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)
    max_steps: int = 1000
    seed: int = 0
    log_every: int = 10
    val_every: int = 200

    def __post_init__(self) -> None:
        if self.max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")
        if not self.objectives:
            raise ValueError("objectives: the mix is empty")
        for key, entry in self.objectives.items():
            if key != entry.objective.name:
                raise ValueError(f"objectives[{key!r}] holds objective {entry.objective.name!r}; key it by that name")

    def task_names(self) -> tuple[str, ...]:
        return tuple(self.data.tasks)


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


# ------------------------------------------------------------------ overrides
def absolute_local_paths(config: TrainConfig) -> TrainConfig:
    """The config with local data and output paths made absolute (URLs with a scheme are kept).

    Ray Train workers do not run in the driver's working directory, so a relative path given on
    the command line or in a recipe must be resolved where it was written: in the driver.
    """

    def resolve(url: str) -> str:
        return url if not url or "://" in url else os.path.abspath(url)

    tasks = {name: replace(task, url=resolve(task.url)) for name, task in config.data.tasks.items()}
    return replace(
        config,
        data=replace(config.data, tasks=tasks),
        checkpoint=replace(config.checkpoint, output=resolve(config.checkpoint.output)),
    )


def apply_overrides(config: Any, assignments: Sequence[str]) -> Any:
    """A copy of `config` with each `a.b.c=value` applied (dataclass fields, mapping keys).

    The value is parsed as a Python literal when it is one (`3`, `0.1`, `(0.9, 0.95)`, `None`,
    `True`) and converted to the field's declared type; anything else is a string.
    """
    for assignment in assignments:
        path, sep, text = assignment.partition("=")
        if not sep or not path:
            raise ValueError(f"--set expects a.b=value, got {assignment!r}")
        config = _set_path(config, path.strip().split("."), text.strip(), path.strip())
    return config


def _set_path(node: Any, keys: list[str], text: str, full: str) -> Any:
    key, rest = keys[0], keys[1:]
    if dataclasses.is_dataclass(node):
        names = [f.name for f in dataclasses.fields(node)]
        if key not in names:
            raise ValueError(f"--set {full}: {type(node).__name__} has no field {key!r}; fields: {', '.join(names)}")
        current = getattr(node, key)
        if rest:
            new = _set_path(current, rest, text, full)
        else:
            new = _convert(text, typing.get_type_hints(type(node))[key], current, full)
        return dataclasses.replace(node, **{key: new})
    if isinstance(node, Mapping):
        if key not in node:
            raise ValueError(f"--set {full}: no entry {key!r}; entries: {', '.join(map(str, node))}")
        if not rest:
            raise ValueError(f"--set {full}: set a field of entry {key!r}, not the entry itself")
        return {**node, key: _set_path(node[key], rest, text, full)}
    raise ValueError(f"--set {full}: {key!r} is inside a {type(node).__name__}, which has no fields")


def _convert(text: str, annotation: Any, current: Any, full: str) -> Any:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    allowed = _allowed_types(annotation)
    if value is None:
        if type(None) in allowed or annotation is Any:
            return None
        raise ValueError(f"--set {full}: field cannot be None")
    if annotation is Any:
        return value
    for kind in allowed:
        if kind is bool:
            if isinstance(value, bool):
                return value
        elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        elif kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        elif kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(text)
        elif kind is tuple and isinstance(value, (tuple, list)):
            return tuple(value)
    names = ", ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise ValueError(f"--set {full}: cannot use {text!r} as {names} (current value {current!r})")


def _allowed_types(annotation: Any) -> tuple:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(annotation) for t in _allowed_types(arg))
    if origin is not None:
        return (origin,)
    return (annotation,)


# ------------------------------------------------------------------ serialisation
def to_jsonable(value: Any) -> Any:
    """The resolved config as JSON-able data; dataclasses carry their class path under `_type`."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {"_type": f"{type(value).__module__}.{type(value).__qualname__}"}
        out.update({f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)})
        return out
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if type(value).__module__.startswith("atomforge.") and hasattr(value, "__dict__"):
        # Objectives and schedules: their class and public settings, so the run record says how it trained.
        out = {"_type": f"{type(value).__module__}.{type(value).__qualname__}"}
        out.update({k: to_jsonable(v) for k, v in vars(value).items() if not k.startswith("_")})
        return out
    return repr(value)
