"""The per-worker training function run by Ray Train's TorchTrainer (and directly, in local mode).

Every rank builds the same model from the same seed, reads its own slice of every task's shards
through its shard loader (the temperature mixer plans, loader workers build batches ahead),
computes the objective mix on atom-budget micro-batches and all-reduces the
gradients. The step's loss is the per-structure mean over all micro-batches and ranks
(`training.reduction`). Gradients are reduced explicitly (one flattened all-reduce per step, on the
gloo or NCCL process group Ray Train set up) rather than through DDP's reducer: objectives call the model
several times per step (SCD's two passes, DeNS) and per-task heads go unused on some ranks, which
DDP's bucketed hooks do not support without `find_unused_parameters` and a static graph.
Randomness (task draws, objective noise, dropout) is seeded by (seed, rank, step, micro-batch), so
a resumed run repeats an uninterrupted one exactly.

A Worker learns its rank, world size and device from a `Session`: Ray Train's (`ray_session`, what
`train_worker` uses) or one plain process without Ray (`process_session`: rank 0 of 1, checkpoints
written to the run directory), so one GPU runs the same loop where Ray is not installed
(benchmarks/gpu_check.py on a bare GPU machine). Ray is imported only by a Ray session.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from atomforge.artifacts import checkpoint as ckpt
from atomforge.storage import filesystem
from atomforge.training.config import TrainConfig, to_jsonable
from atomforge.training.data import batch_to, open_source, resolve_spec, train_loader, validation_loaders
from atomforge.training.metrics import MetricsLogger
from atomforge.training.optim import build_ema, build_optimizer, build_scheduler, clip_gradients
from atomforge.training.reduction import micro_batch_weight, reduce_step
from atomforge.training.runtime import build_model, build_objective, objective_context
from atomforge.training.validation import merge, validation_metrics, validation_sums

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Session:
    """Where a Worker runs: rank of `world`, its device, and whether Ray Train runs it (checkpoints are
    reported to Ray Train) or one plain process does (they are written to the run directory only)."""

    rank: int
    world: int
    device: torch.device
    ray: bool


def ray_session(config: TrainConfig) -> Session:
    """The Ray Train worker this code runs in (TorchTrainer, or its local mode with num_workers=0)."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    device = ray.train.torch.get_device() if config.scaling.use_gpu else torch.device("cpu")
    return Session(context.get_world_rank(), context.get_world_size(), device, ray=True)


def process_session(config: TrainConfig) -> Session:
    """This process alone, without Ray: rank 0 of 1 on the current CUDA device when `scaling.use_gpu`."""
    if config.scaling.use_gpu and not torch.cuda.is_available():
        raise ValueError("scaling.use_gpu is set but torch sees no CUDA device")
    device = torch.device("cuda", torch.cuda.current_device()) if config.scaling.use_gpu else torch.device("cpu")
    return Session(0, 1, device, ray=False)


class Worker:
    """The state of one training worker; `run()` trains to `config.max_steps`.

    session: where it runs (default: the Ray Train worker it is called in, `ray_session`).
    """

    def __init__(self, config: TrainConfig, session: Session | None = None):
        self.session = session or ray_session(config)
        self.config = config
        self.rank, self.world, self.device = self.session.rank, self.session.world, self.session.device
        self.local_mode = config.scaling.num_workers == 0 or not self.session.ray
        self.sources = {name: open_source(name, task.url) for name, task in config.data.tasks.items()}
        self.specs = {name: resolve_spec(task.spec, self.sources[name]) for name, task in config.data.tasks.items()}
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.model = build_model(config.model, self.specs).to(self.device)
        self._broadcast_parameters()
        self.objective = build_objective(config.objectives, self.model)
        label_notes = self.objective.check_labels(self.specs)
        self.graph_params = {name: source.graph for name, source in self.sources.items()}
        self.ema = build_ema(self.model, config.optim.ema_decay)
        self.optimizer = build_optimizer(self.model, config.optim, self.objective.frozen_parameters(self.model))
        self.scheduler = build_scheduler(self.optimizer, config.max_steps, config.optim)
        self.amp = AMP_DTYPES.get(config.scaling.amp)  # bf16 autocasts on CPU too; fp16 needs CUDA (config)
        if self.amp is torch.float16 and self.device.type != "cuda":
            raise ValueError(f"scaling.amp=fp16 needs a CUDA device (its GradScaler is CUDA's); {self.device} has "
                             "none: use scaling.amp=bf16 or none")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp is torch.float16)
        self.loader = train_loader(config.data, self.sources, self.specs, config.seed, self.rank, self.world,
                                   config.optim.grad_accum, pin_memory=self.device.type == "cuda")
        self.val_loaders = validation_loaders(config.data, self.sources, self.specs, self.rank, self.world)
        self.task_names = tuple(config.data.tasks)
        self.seen = dict.fromkeys(self.task_names, 0)  # structures trained on, per task
        self.batches = None  # the training batches, opened once the loader's state is restored
        self.step = 0
        self.window: dict[str, list[float]] = {}
        self.logger = None
        if self.rank == 0:
            local_logs, remote = _log_dirs(config.checkpoint.output)
            self.logger = MetricsLogger(local_logs, remote, config.max_steps)
            for note in label_notes:
                self.logger.warn(self.step, note)

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict[str, float]:
        self._restore()
        self.batches = iter(self.loader)
        last: dict[str, float] = {}
        started, structures = time.time(), 0
        while self.step < self.config.max_steps:
            self._maybe_fail()
            step_started = time.perf_counter()
            metrics = self.train_step()
            metrics["time/step_s"] = time.perf_counter() - step_started
            structures += int(metrics.pop("num_structures"))
            self.step += 1
            for k, v in metrics.items():
                self.window.setdefault(k, []).append(v)
            if self.step % self.config.log_every == 0 or self.step == self.config.max_steps:
                elapsed = max(time.time() - started, 1e-9)
                last = self._log_train(structures / elapsed)
                started, structures = time.time(), 0
            if self.config.val_every and self.step % self.config.val_every == 0:
                last.update(self.validate())
            if self.step % self.config.checkpoint.every_steps == 0 or self.step == self.config.max_steps:
                self._save(last)
        self.batches.close()  # stops the loader's workers
        if self.logger is not None:
            self.logger.close()
        return last

    def train_step(self) -> dict[str, float]:
        """One optimizer step over `grad_accum` micro-batches; the loss is the per-structure mean over
        every micro-batch of every rank (`reduction`), other metrics this rank's micro-batch means."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        accum = self.config.optim.grad_accum
        sums: dict[str, float] = {}
        num_structures, loss_sum, waited = 0, 0.0, 0.0
        for micro in range(accum):
            started = time.perf_counter()
            batch = next(self.batches)  # micro-batch `micro` of this step (the mixer's seeding)
            waited += time.perf_counter() - started
            for index, count in enumerate(torch.bincount(batch.task, minlength=len(self.task_names)).tolist()):
                self.seen[self.task_names[index]] += count
            count = batch.num_graphs
            batch = batch_to(batch, self.device)
            torch.manual_seed(_seed(self.config.seed, 0, self.rank, self.step, micro))
            context = objective_context(self._generator(0, micro), self.step, self.config.max_steps,
                                        self.specs, training=True, graph_params=self.graph_params)
            with self._autocast():
                result = self.objective.run(self.model, batch, context)
            weight = micro_batch_weight(count)
            self.scaler.scale(result.loss * weight).backward()
            num_structures += count
            loss_sum += float(result.loss.detach()) * weight
            for k, v in result.metrics.items():
                if k != "loss":
                    sums[k] = sums.get(k, 0.0) + float(v) / accum
        loss, _ = reduce_step(self.model, loss_sum, num_structures, self.world)
        self.scaler.unscale_(self.optimizer)
        grad_norm = clip_gradients(self.model, self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return {**sums, "loss": loss, "grad_norm": grad_norm, "lr": self.scheduler.get_last_lr()[0],
                "num_structures": num_structures, "time/data_s": waited}

    def validate(self) -> dict[str, float]:
        """The EMA model (or the model) on every task's validation rows (`training.validation`):
        clean per-task errors, whatever the mix, and the mix's loss per structure."""
        model = self.ema.module if self.ema is not None else self.model
        model.eval()
        parts = []
        for task, loader in self.val_loaders.items():
            for index, batch in enumerate(loader):
                batch = batch_to(batch, self.device)
                context = objective_context(self._generator(1, index), self.step, self.config.max_steps,
                                            self.specs, training=False, graph_params=self.graph_params)
                with self._autocast():
                    parts.append(validation_sums(self.objective, model, batch, context, task))
        metrics = validation_metrics(merge(self._gather(merge(parts))))
        if self.logger is not None and metrics:
            self.logger.log(self.step, metrics, kind="val")
        return metrics

    # ------------------------------------------------------------------ metrics
    def _log_train(self, structures_per_s: float) -> dict[str, float]:
        local = {k: float(np.mean(v)) for k, v in self.window.items()}
        self.window = {}
        gathered = self._gather({"metrics": local, "seen": self.seen, "rate": structures_per_s})
        names = sorted({k for g in gathered for k in g["metrics"]})
        metrics = {k: float(np.mean([g["metrics"][k] for g in gathered if k in g["metrics"]])) for k in names}
        seen = _sum_dicts([g["seen"] for g in gathered])
        total = max(sum(seen.values()), 1)
        probabilities = dict(zip(self.task_names, self.loader.planner.probabilities))
        for task in self.task_names:
            metrics[f"seen/{task}"] = seen[task]
            metrics[f"share/{task}"] = seen[task] / total
            metrics[f"expected/{task}"] = float(probabilities[task])
        metrics["structures_per_s"] = float(sum(g["rate"] for g in gathered))
        if self.logger is not None:
            self.logger.log(self.step, metrics)
        return metrics

    def _gather(self, value: Any) -> list[Any]:
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    # ------------------------------------------------------------------ checkpoints
    def _state(self, mixers: list[dict]) -> dict[str, Any]:
        return {
            "step": self.step,
            "world_size": self.world,
            "model": self.model.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "mixers": mixers,
            "torch_rng": torch.get_rng_state(),
        }

    def _save(self, metrics: Mapping[str, float]) -> None:
        mixers = self._gather(self.loader.state_dict())  # after the batches consumed, not those built ahead
        name = ckpt.checkpoint_name(self.step)
        report = {"step": self.step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
        if self.rank != 0:
            _ray_train().report(report, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            model_json = self.model.config_dict() if hasattr(self.model, "config_dict") else None
            ckpt.write_checkpoint(Path(tmp), self._state(mixers), to_jsonable(self.config), model_json)
            if self.local_mode:
                ckpt.upload(Path(tmp), self.config.checkpoint.output, name, self.config.checkpoint.num_to_keep)
            if self.session.ray:
                train = _ray_train()
                train.report(report, checkpoint=train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)
        self.logger.sync()

    def _restore(self) -> None:
        state = self._load_state()
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        if state["world_size"] == self.world:
            self.loader.load_state_dict(state["mixers"][self.rank])
        else:  # a different worker count cannot continue the same rows: start every stream's next epoch
            saved = state["mixers"][0]["planner"]
            batches = self.step * self.config.optim.grad_accum
            self.loader.load_state_dict({"batches": batches, "planner": {
                "streams": {t: {"epoch": int(s["epoch"]) + 1, "position": 0} for t, s in saved["streams"].items()},
                "samples_seen": saved["samples_seen"], "pending": None, "batches": batches}})
        self.seen = dict(self.loader.state_dict()["planner"]["samples_seen"])
        if self.logger is not None:
            print(f"resumed from step {self.step}", flush=True)

    def _load_state(self) -> dict[str, Any] | None:
        checkpoint = _ray_train().get_checkpoint() if self.session.ray else None
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                return ckpt.read_state(directory)
        # Ray's local mode persists nothing, and a worker group that fails right after a report can
        # restart before the controller registered that checkpoint: the run directory is the truth.
        # (The driver refuses an output holding checkpoints unless --resume, so these are this run's.)
        url = ckpt.latest_checkpoint(self.config.checkpoint.output)
        if url is None:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            return ckpt.read_state(ckpt.download(url, Path(tmp)))

    # ------------------------------------------------------------------ helpers
    def _maybe_fail(self) -> None:
        fault = self.config.fault
        rank = fault.rank if fault.rank >= 0 else self.world - 1
        if fault.at_step is None or self.step != fault.at_step or self.rank != rank:
            return
        fs, root = filesystem(self.config.checkpoint.output)
        marker = f"{root}/fault_injected_at_{fault.at_step}"
        if fs.exists(marker):
            return
        fs.makedirs(root, exist_ok=True)
        fs.pipe_file(marker, b"injected\n")
        print(f"fault injection: rank {self.rank} fails at step {self.step} ({fault.mode})", flush=True)
        if fault.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected failure at step {self.step} on rank {self.rank}")

    def _generator(self, stream: int, micro: int) -> torch.Generator:
        return torch.Generator(self.device).manual_seed(_seed(self.config.seed, stream + 1, self.rank, self.step, micro))

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _broadcast_parameters(self) -> None:
        if self.world == 1:
            return
        with torch.no_grad():
            for tensor in list(self.model.parameters()) + list(self.model.buffers()):
                dist.broadcast(tensor.data, src=0)


def train_worker(loop_config: dict[str, Any]) -> None:
    """`train_loop_per_worker` of the TorchTrainer: {"config": TrainConfig}.

    Starts from the latest checkpoint of the run directory when there is one (a restart or --resume).
    """
    Worker(loop_config["config"]).run()


def _ray_train():
    """Ray Train's API, imported only where a Ray session uses it (a plain process runs without Ray)."""
    import ray.train

    return ray.train


def _sum_dicts(dicts) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _seed(*parts: int) -> int:
    """A torch seed from (seed, stream, rank, step, micro); streams >= 1 never collide with the mixer's."""
    return int(np.random.default_rng(list(parts)).integers(0, 2**62))


def _log_dirs(output: str) -> tuple[Path, str | None]:
    """(local folder for logs, remote output to copy them to or None)."""
    fs, root = filesystem(output)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return Path(root) / "logs", None
    return Path(tempfile.mkdtemp(prefix="atomforge-logs-")), output
