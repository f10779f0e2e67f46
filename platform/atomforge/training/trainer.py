"""The trainer: one loop for pretraining and fine-tuning, with no Ray in it.

A `Trainer` owns the step: `grad_accum` micro-batches of the objective mix, the global
per-structure loss and gradient all-reduce (`training.reduction`), clipping, AdamW and the
schedule, the EMA copy; and around it validation (`training.validation`), metrics (rank 0),
checkpoints (through a sink, `training.checkpoints`) and hooks (`training.hooks`). Its distributed
needs go through a `training.distributed.Distributed`: the Ray Train layer passes the real process
group, tests pass one rank or in-process ranks in threads. Its parts (model, objective, optimizer,
loaders, ...) are built from a config by `training.build`.

Gradients are reduced explicitly (one flattened all-reduce per step) rather than through DDP's
reducer: objectives call the model several times per step (SCD's two passes, DeNS) and per-task
heads go unused on some ranks, which DDP's bucketed hooks do not support without
`find_unused_parameters` and a static graph. A step's data is the global batch's lanes
(`training.lanes`): this rank runs `grad_accum` micro-batches of each lane it holds, so the step
is the same on any number of ranks. Randomness (task draws, objective noise) is seeded by
(seed, lane, step, micro-batch), so a resumed run repeats an uninterrupted one exactly, also when
it resumes on another number of ranks (an elastic restart).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atomforge.artifacts import checkpoint as ckpt
from atomforge.artifacts.pretrained import with_references
from atomforge.objectives import ObjectiveContext, ObjectiveMix
from atomforge.tasks import TaskSpec
from atomforge.training import initialization
from atomforge.training.checkpoints import RunDirectory, write_weights
from atomforge.training.config import TrainConfig
from atomforge.training.distributed import Distributed, SingleProcess
from atomforge.training.hooks import Hook
from atomforge.training.lanes import merge_states, next_epoch_state, owned_lanes, rank_state, samples_seen
from atomforge.training.metrics import MetricsLogger, log_dirs
from atomforge.training.optim import clip_gradients
from atomforge.training.overrides import to_jsonable
from atomforge.training.reduction import micro_batch_weight, reduce_step
from atomforge.training.validation import merge, validation_metrics, validation_sums

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainerParts:
    """What a trainer trains with (built by `training.build.build_parts`).

    specs: TaskSpec of every model task (model.tasks order; `batch.task` indexes it); data_tasks: the
    tasks the loaders read (their names); probabilities: each data task's sampling probability;
    graph_params: each data task's stored-graph block (skin, K_store); records: task records for
    checkpoints (`artifacts.pretrained.task_record`); meta: extra JSON recorded in checkpoints.
    """

    model: torch.nn.Module
    objective: ObjectiveMix
    specs: Mapping[str, TaskSpec]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: Any
    train_loader: Any
    val_loaders: Mapping[str, Any]
    data_tasks: Sequence[str]
    probabilities: Mapping[str, float]
    graph_params: Mapping[str, Mapping] = field(default_factory=dict)
    records: Mapping[str, dict] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    notes: Sequence[str] = ()


class Trainer:
    """Trains `parts` to `config.max_steps` (or until a hook stops it); `fit()` returns the last metrics."""

    def __init__(self, config: TrainConfig, parts: TrainerParts, dist: Distributed | None = None, sink=None,
                 hooks: Sequence[Hook] = (), device: torch.device | str = "cpu"):
        self.config, self.parts = config, parts
        self.dist = dist or SingleProcess()
        self.rank, self.world = self.dist.rank, self.dist.world
        self.lanes = owned_lanes(self.rank, self.world, config.scaling.lanes)  # this rank's lanes of each step
        self.sink = sink or RunDirectory(config.checkpoint.output, config.checkpoint.num_to_keep)
        self.hooks = list(hooks)
        self.device = torch.device(device)
        self.model, self.objective, self.ema = parts.model, parts.objective, parts.ema
        self.optimizer, self.scheduler = parts.optimizer, parts.scheduler
        self.amp = AMP_DTYPES.get(config.scaling.amp)  # bf16 autocasts on the CPU too; fp16 needs CUDA
        if self.amp is torch.float16 and self.device.type != "cuda":
            raise ValueError(f"scaling.amp=fp16 needs a CUDA device (its GradScaler is CUDA's); {self.device} has "
                             "none: use scaling.amp=bf16 or none")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp is torch.float16)
        self.task_names = tuple(parts.specs)  # = model.tasks
        self.seen = dict.fromkeys(self.task_names, 0)  # structures trained on, per task
        self.step, self.stop_reason = 0, None
        self.batches, self.pending = None, None  # pending: a batch drawn before step 1 (the scale-factor fit)
        self.window: dict[str, list[float]] = {}
        self.last: dict[str, float] = {}
        self.logger = MetricsLogger(*log_dirs(config.checkpoint.output), config.max_steps) if self.rank == 0 else None
        for note in parts.notes:
            self.warn(note)

    # ------------------------------------------------------------------ main loop
    def fit(self) -> dict[str, float]:
        """Restore the newest checkpoint (if any), train, checkpoint; the last logged metrics."""
        resumed = self.restore()
        self.batches, self.pending = iter(self.parts.train_loader), None
        if not resumed:
            self._initialize()
        for hook in self.hooks:
            hook.on_start(self)
        if self.config.validate_at_start and self.step == 0:
            self.last.update(self.validate())
        started, structures = time.time(), 0
        try:
            while self.step < self.config.max_steps and self.stop_reason is None:
                for hook in self.hooks:
                    hook.before_step(self)
                step_started = time.perf_counter()
                metrics = self.train_step()
                metrics["time/step_s"] = time.perf_counter() - step_started
                structures += int(metrics.pop("num_structures"))
                self.step += 1
                for k, v in metrics.items():
                    self.window.setdefault(k, []).append(v)
                for hook in self.hooks:
                    hook.after_step(self, metrics)
                if self._due(self.config.log_every):
                    self.last = self._log_train(structures / max(time.time() - started, 1e-9))
                    started, structures = time.time(), 0
                if self.config.val_every and self.step % self.config.val_every == 0:
                    self.last.update(self.validate())
                if self._due(self.config.checkpoint.every_steps) or self.stop_reason is not None:
                    self.save()
        finally:
            self.batches.close()  # stops the loader's workers
        if self.stop_reason is not None:
            self.warn(self.stop_reason)
        for hook in self.hooks:
            hook.on_end(self)
        if self.logger is not None:
            self.logger.close()
        return {**self.last, "step": self.step}

    def _due(self, every: int) -> bool:
        return self.step % every == 0 or self.step == self.config.max_steps

    def request_stop(self, reason: str) -> None:
        """End the run after this step (with a checkpoint). Call it on every rank (e.g. from after_validation)."""
        self.stop_reason = reason

    def train_step(self) -> dict[str, float]:
        """One optimizer step over `grad_accum` micro-batches of each of this rank's lanes; the loss is the
        per-structure mean over every micro-batch of every rank (`reduction`), other metrics this rank's
        micro-batch means."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        accum = self.config.optim.grad_accum
        sums: dict[str, float] = {}
        num_structures, loss_sum, waited = 0, 0.0, 0.0
        for lane in self.lanes:
            for micro in range(accum):
                started = time.perf_counter()
                batch = self._next_batch()  # micro-batch `micro` of this step in lane `lane` (the planner's order)
                waited += time.perf_counter() - started
                count, loss = self._micro_step(batch, self.context(0, micro, training=True, lane=lane), sums)
                num_structures += count
                loss_sum += loss
        for k in sums:
            sums[k] /= accum * len(self.lanes)
        loss, _ = reduce_step(self.model, loss_sum, num_structures, self.dist)
        self.scaler.unscale_(self.optimizer)
        grad_norm = clip_gradients(self.model, self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        group = self.optimizer.param_groups[0]  # lr of the base: layer-wise groups carry their multiplier
        lr = group["lr"] / group.get("lr_multiplier", 1.0)
        return {**sums, "loss": loss, "grad_norm": grad_norm, "lr": lr, "world": float(self.world),
                "num_structures": num_structures, "time/data_s": waited}

    def _micro_step(self, batch, context: ObjectiveContext, sums: dict[str, float]) -> tuple[int, float]:
        """Forward and backward of one micro-batch (loss weighted by its structure count); (structures,
        weighted loss), its other metrics added to `sums`."""
        for index, count in enumerate(torch.bincount(batch.task, minlength=len(self.task_names)).tolist()):
            self.seen[self.task_names[index]] += count
        count = batch.num_graphs
        batch = batch_to(batch, self.device)
        with self._autocast():
            result = self.objective.run(self.model, batch, context)
        weight = micro_batch_weight(count)
        self.scaler.scale(result.loss * weight).backward()
        for k, v in result.metrics.items():
            if k != "loss":
                sums[k] = sums.get(k, 0.0) + float(v)
        return count, float(result.loss.detach()) * weight

    def context(self, stream: int, micro: int, training: bool, lane: int | None = None) -> ObjectiveContext:
        """The objective context of micro-batch `micro` of this step; `stream` 0 trains (seeded by `lane`,
        default this rank's number), 1 validates (seeded by this rank)."""
        graphs = list(self.parts.graph_params.values())
        skins = [float(g["skin"]) for g in graphs if g.get("skin") is not None]
        k_stores = [int(g["k_store"]) for g in graphs if g.get("k_store") is not None]
        seed = step_seed(self.config.seed, stream + 1, self.rank if lane is None else lane, self.step, micro)
        generator = torch.Generator(self.device).manual_seed(seed)
        return ObjectiveContext(generator=generator, tasks=dict(self.parts.specs), task_names=self.task_names,
                                step=self.step, total_steps=self.config.max_steps, training=training,
                                skin=min(skins) if skins else 0.0, k_store=min(k_stores) if k_stores else None)

    # ------------------------------------------------------------------ validation
    def validated_model(self) -> torch.nn.Module:
        """The weights validation evaluates and selection keeps: the EMA copy, or the model."""
        return self.ema.module if self.ema is not None else self.model

    def validate(self) -> dict[str, float]:
        """The validated model on every task's validation rows (`training.validation`): clean per-task
        errors, whatever the mix, and the mix's loss per structure; merged over ranks."""
        model = self.validated_model()
        model.eval()
        parts = []
        for task, loader in self.parts.val_loaders.items():
            for index, batch in enumerate(loader):
                batch = batch_to(batch, self.device)
                with self._autocast():
                    parts.append(validation_sums(self.objective, model, batch, self.context(1, index, False), task))
        metrics = validation_metrics(merge(self.dist.all_gather(merge(parts))))
        self.log_scalars(metrics, kind="val")
        for hook in self.hooks:
            hook.after_validation(self, metrics)
        return metrics

    # ------------------------------------------------------------------ metrics
    def log_scalars(self, metrics: Mapping[str, float], kind: str = "train") -> None:
        """One metrics record at this step (rank 0 writes; other ranks do nothing)."""
        if self.logger is not None and metrics:
            self.logger.log(self.step, metrics, kind=kind)

    def warn(self, message: str) -> None:
        if self.logger is not None:
            self.logger.warn(self.step, message)

    def _log_train(self, structures_per_s: float) -> dict[str, float]:
        local = {k: float(np.mean(v)) for k, v in self.window.items()}
        self.window = {}
        gathered = self.dist.all_gather({"metrics": local, "seen": self.seen, "rate": structures_per_s})
        names = sorted({k for g in gathered for k in g["metrics"]})
        metrics = {k: float(np.mean([g["metrics"][k] for g in gathered if k in g["metrics"]])) for k in names}
        seen = {t: sum(g["seen"][t] for g in gathered) for t in self.task_names}
        total = max(sum(seen[t] for t in self.parts.data_tasks), 1)
        for task in self.parts.data_tasks:
            metrics[f"seen/{task}"] = seen[task]
            metrics[f"share/{task}"] = seen[task] / total
            metrics[f"expected/{task}"] = float(self.parts.probabilities[task])
        metrics["structures_per_s"] = float(sum(g["rate"] for g in gathered))
        self.log_scalars(metrics)
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, loaders: list[dict]) -> dict[str, Any]:
        """The training state; `loaders` = every lane's loader state (`lanes.merge_states`)."""
        return {
            "step": self.step, "world_size": self.world, "lanes": self.config.scaling.lanes,
            "model": self.model.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "mixers": loaders,
            "hooks": {h.name: h.state_dict() for h in self.hooks if h.state_dict() is not None},
            "torch_rng": torch.get_rng_state(),
        }

    def save(self) -> None:
        """Checkpoint `checkpoint_<step>` (collective: every rank calls it)."""
        gathered = self.dist.all_gather(self.parts.train_loader.state_dict())  # after the batches consumed
        report = {"step": self.step, **{k: v for k, v in self.last.items() if isinstance(v, (int, float))}}
        write = None
        if self.rank == 0:
            lane_batches = self.step * self.config.optim.grad_accum
            state = self.state_dict(merge_states(gathered, self.config.scaling.lanes, lane_batches))

            def write(folder: Path) -> None:
                self._write(folder, state)
        self.sink.save(ckpt.checkpoint_name(self.step), write, report)
        if self.logger is not None:
            self.logger.sync()

    def save_weights(self, name: str, weights: Mapping[str, torch.Tensor], extra: Mapping[str, Any]) -> None:
        """`<output>/<name>/`: `weights` as a checkpoint (model and EMA copy), rank 0 only (no collective)."""
        if self.rank != 0:
            return
        state = {"step": int(extra.get("best_step", self.step)), "world_size": self.world, "model": dict(weights),
                 "ema": {f"module.{k}": v for k, v in weights.items()}}
        write_weights(self.config.checkpoint.output, name, lambda folder: self._write(folder, state, extra))

    def _write(self, folder: Path, state: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
        """The checkpoint files; tasks.json and model.json give the written weights' linear references
        (the EMA copy's where there is one: what is validated and exported), so trained ones are recorded."""
        meta = {**to_jsonable(self.config), **self.parts.meta, **(extra or {})}
        weights = state["model"] if state.get("ema") is None else state["ema"]
        table = weights.get("linear_reference", weights.get("module.linear_reference"))
        records, model_json = dict(self.parts.records), self.model.config_dict()
        if table is not None:
            records, model_json = with_references(records, model_json, table.detach().cpu())
        ckpt.write_checkpoint(folder, state, meta, model_json, records)

    def restore(self) -> bool:
        """Continue from the sink's newest checkpoint, if any (a restart or --resume); True when one was found."""
        state = self.sink.latest_state()
        if state is None:
            return False
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self._restore_loader(state)
        hooks = state.get("hooks") or {}
        for hook in self.hooks:
            if hook.name in hooks:
                hook.load_state_dict(hooks[hook.name])
        self.seen.update(samples_seen(self.parts.train_loader.state_dict()["planner"]))
        if self.logger is not None:
            print(f"resumed from step {self.step} on {workers(self.world)} (saved by {workers(state['world_size'])})",
                  flush=True)
        return True

    def _restore_loader(self, state: Mapping[str, Any]) -> None:
        """Every lane continues from its saved position, whatever the number of ranks now holding the lanes.
        A checkpoint of another lane count (scaling.num_workers changed: another global batch) cannot
        continue the same rows: every stream starts its next epoch."""
        lane_batches = self.step * self.config.optim.grad_accum
        lanes = self.config.scaling.lanes
        if int(state["lanes"]) == lanes:
            self.parts.train_loader.load_state_dict(rank_state(state["mixers"], self.lanes, lane_batches))
            return
        self.warn(f"the checkpoint's global batch has {state['lanes']} lanes (scaling.num_workers then), this run "
                  f"{lanes}: the batch size changed and every data stream starts its next epoch")
        self.parts.train_loader.load_state_dict(next_epoch_state(state["mixers"], self.lanes, lane_batches))

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _initialize(self) -> None:
        """A fresh run's starting weights, identical on every rank: GemNet-OC scale factors fitted on
        rank 0's first micro-batch where none are fitted yet (a fresh backbone; pretrained weights
        carry theirs), then rank 0's parameters and buffers broadcast, then the EMA copy taken."""
        fit = initialization.scale_factors_unfitted(self.model)  # the same on every rank (same weights)
        if fit and self.rank == 0:
            self.pending = next(self.batches)  # still trained on: it is the first micro-batch of step 1
            fitted = initialization.fit_scales(self.model, batch_to(self.pending, self.device))
            print(f"fitted {len(fitted)} scale factors on the first batch ({self.pending.num_graphs} structures)",
                  flush=True)
        with torch.no_grad():
            if self.world > 1:
                for tensor in list(self.model.parameters()) + list(self.model.buffers()):
                    self.dist.broadcast(tensor.data, src=0)
            if self.ema is not None:  # the EMA copy was made before the broadcast and the fit
                for tensor, source in zip(self.ema.module.state_dict().values(), self.model.state_dict().values()):
                    tensor.copy_(source)

    def _next_batch(self):
        if self.pending is not None:
            batch, self.pending = self.pending, None
            return batch
        return next(self.batches)


def workers(count: int) -> str:
    return f"{count} worker" if count == 1 else f"{count} workers"


def step_seed(*parts: int) -> int:
    """A torch seed from (seed, stream, rank, step, micro); streams >= 1 never collide with the mixer's."""
    return int(np.random.default_rng(list(parts)).integers(0, 2**62))


def batch_to(batch, device: torch.device):
    """Move a PyG batch to `device` (Ray's prepare_data_loader does not: ray#46064); `non_blocking`
    copies overlap the step when the loader pinned the batch."""
    return batch.to(device, non_blocking=True) if device.type != "cpu" else batch
