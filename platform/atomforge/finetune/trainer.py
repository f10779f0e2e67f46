"""The fine-tuning loop: layer-wise learning rates (JMP), warmup + cosine, EMA, early stopping on val.

The loss is the config's objective mix (`FinetuneConfig.objective_entries`: the supervised loss,
or DeNS / Noisy Nodes which contain it), run by the same `ObjectiveMix` as pretraining; evaluation
is always the clean model (no corruption, no force encoding).

In-process and single-process on purpose: downstream sets are small (rMD17: 950 + 50 structures),
so the whole set is graphed once and a plain PyTorch loop is the fastest thing on one device.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from atomforge.finetune.config import FinetuneConfig, FinetuneOptim
from atomforge.finetune.data import DownstreamData, batches, graphs
from atomforge.finetune.evaluate import evaluate, selection_score
from atomforge.objectives import ObjectiveContext, ObjectiveMix
from atomforge.tasks import TaskSpec
from atomforge.training.config import OptimConfig
from atomforge.training.optim import build_ema, lr_factor, no_decay

_BLOCK = re.compile(r"^backbone\.[A-Za-z_]+\.(\d+)\.")


@dataclass
class FinetuneResult:
    """The best (EMA) model by validation score, its metrics per split and the test predictions."""

    model: nn.Module
    metrics: dict[str, dict[str, float]]
    predictions: dict[str, np.ndarray]
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def layer_multiplier(name: str, num_blocks: int, optim: FinetuneOptim) -> float:
    """LR multiplier of one parameter: embedding (and other non-block backbone parts), block i, or heads.

    Block multipliers are read off `optim.block_lr` at the block's relative depth (linear
    interpolation), so a 2-block backbone gets the first and last of JMP's six values.
    """
    if not name.startswith("backbone."):
        return optim.head_lr
    match = _BLOCK.match(name)
    if match is None:
        return optim.embedding_lr
    depth = int(match.group(1)) / max(num_blocks - 1, 1)
    table = np.asarray(optim.block_lr, dtype=np.float64)
    return float(np.interp(depth * (len(table) - 1), np.arange(len(table)), table))


def param_groups(model: nn.Module, optim: FinetuneOptim) -> list[dict[str, Any]]:
    """AdamW groups keyed by (multiplier, weight decay): `training.optim.no_decay` parameters
    (< 2 dims, embedding tables) get no decay."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    skip = no_decay(model)
    blocks = [int(m.group(1)) for n, _ in named if (m := _BLOCK.match(n))]
    num_blocks = max(blocks) + 1 if blocks else 1
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in named:
        mult = layer_multiplier(name, num_blocks, optim)
        decay = 0.0 if id(param) in skip else optim.weight_decay
        group = groups.setdefault((mult, decay), {"params": [], "names": [], "lr": optim.lr * mult,
                                                  "weight_decay": decay, "lr_multiplier": mult})
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, optim: FinetuneOptim, steps_per_epoch: int):
    """(AdamW with layer-wise groups, LambdaLR warmup + cosine over the whole epoch budget)."""
    groups = param_groups(model, optim)
    optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups],
                                  lr=optim.lr, betas=tuple(optim.betas))
    schedule = OptimConfig(lr=optim.lr, warmup_steps=optim.warmup_epochs * steps_per_epoch,
                           warmup_start_factor=optim.warmup_start_factor, min_lr_factor=optim.min_lr_factor)
    total = optim.max_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, schedule))
    return optimizer, scheduler


def train_epoch(model: nn.Module, mix: ObjectiveMix, train, optimizer, scheduler, ema, context, first_step: int,
                optim: FinetuneOptim) -> dict[str, float]:
    """One pass over the training batches with the objective mix; the mean of its loss and metrics.

    context(step) gives each step's ObjectiveContext (the step drives schedules such as DeNS's λ_D decay)."""
    model.train()
    sums: dict[str, list[float]] = {}
    for step, batch in enumerate(train, start=first_step):
        optimizer.zero_grad(set_to_none=True)
        result = mix.run(model, batch, context(step))
        result.loss.backward()
        if optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        for key, value in result.metrics.items():
            if not key.endswith("/weight"):
                sums.setdefault(key, []).append(float(value))
    return {key: float(np.mean(values)) for key, values in sums.items()}


def finetune(model: nn.Module, data: DownstreamData, config: FinetuneConfig, log=print) -> FinetuneResult:
    """Train `model` on data.splits['train'], select by val each epoch, evaluate the best on val and test."""
    started = time.time()
    optim, spec = config.optim, data.spec
    task = list(model.tasks).index(spec.name)
    k = config.target.max_neighbors
    split_graphs = {name: graphs(items, spec, k, task) for name, items in data.splits.items()}
    specs: Mapping[str, TaskSpec] = {**_model_specs(model), spec.name: spec}
    mix = ObjectiveMix(config.objective_entries(), model)
    for note in mix.check_labels({spec.name: spec}):
        log(f"[warning] {note}")
    generator = torch.Generator().manual_seed(config.seed)  # objective noise and gates, one stream per run
    steps_per_epoch = -(-len(split_graphs["train"]) // optim.batch_size)
    total_steps = optim.max_epochs * steps_per_epoch

    def context(step: int) -> ObjectiveContext:
        return ObjectiveContext(generator=generator, tasks=specs, task_names=model.tasks, step=step, total_steps=total_steps)

    optimizer, scheduler = build_optimizer(model, optim, steps_per_epoch)
    ema = build_ema(model, optim.ema_decay)
    order = torch.Generator().manual_seed(config.seed)
    best_score, best_state, best_epoch, history = float("inf"), None, 0, []
    for epoch in range(1, optim.max_epochs + 1):
        train = batches(split_graphs["train"], optim.batch_size, shuffle=True, generator=order)
        means = train_epoch(model, mix, train, optimizer, scheduler, ema, context, (epoch - 1) * steps_per_epoch, optim)
        current = ema.module if ema is not None else model
        val = evaluate(current, split_graphs["val"], config, spec).metrics
        score = selection_score(val, config, spec)
        history.append({"epoch": epoch, "train_loss": means.pop("loss"), "val_score": score,
                        "lr": scheduler.get_last_lr()[0], **{f"train/{k}": v for k, v in means.items()},
                        **{f"val/{k}": v for k, v in val.items()}})
        log(_epoch_line(history[-1], config))
        if score < best_score:
            best_score, best_state, best_epoch = score, copy.deepcopy(current.state_dict()), epoch
        elif epoch - best_epoch >= optim.patience:
            log(f"early stop at epoch {epoch}: no val improvement for {optim.patience} epochs (best {best_epoch})")
            break
    model.load_state_dict(best_state)
    model.eval()
    metrics, predictions = {}, {}
    for name in ("val", "test"):
        result = evaluate(model, split_graphs[name], config, spec)
        metrics[name] = result.metrics
        if name == "test":
            predictions = result.arrays
    return FinetuneResult(model, metrics, predictions, history, best_epoch, time.time() - started)


def _model_specs(model) -> dict[str, TaskSpec]:
    stats = model.config_dict()["task_statistics"]
    return {t: TaskSpec(t, energy_mean=s["energy_mean"], energy_std=s["energy_std"], force_std=s["force_std"],
                        mean_reference=s["mean_reference"])
            for t, s in stats.items()}


def _epoch_line(record: Mapping[str, float], config: FinetuneConfig) -> str:
    shown = [f"{k[4:]} {v:.3g}" for k, v in record.items() if k.startswith("val/") and "mae" in k]
    return (f"[finetune {config.name}] epoch {record['epoch']}/{config.optim.max_epochs} "
            f"loss {record['train_loss']:.4g} lr {record['lr']:.2e} | val " + ", ".join(shown))
