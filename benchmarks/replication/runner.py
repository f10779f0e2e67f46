"""Running the replication: corpora -> shards -> pretraining arms -> fine-tuning arms, cached, on N processes.

The platform is used only through four entry points, so a change of trainer touches this module
alone: `preprocess(...)` (the shard pipeline), `prepare_downstream(...)` (a downstream file to
shards), `pretrain(config) -> run dir` and `finetune(config, checkpoint) -> metrics`. Everything else builds configs from the design.
A job whose result file exists is not run again, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from replication.design import (
    BACKBONE,
    CUTOFF,
    JMP_CORPORA,
    MAX_NEIGHBORS,
    PRETRAINING,
    SPLIT,
    Budget,
    Finetuning,
)

# dataset name -> (corpus reader, raw path under the corpora root, reader options)
DATASETS = {
    **{name: (name, name, {}) for name in JMP_CORPORA},
    "bulk": ("ase", "bulk/pretrain", {"dataset": "bulk", "group_by": "cell_id"}),
    "bulk_relaxed": ("ase", "bulk/pretrain/relaxed", {"dataset": "bulk_relaxed", "group_by": "cell_id",
                                                      "frame_kind": "equilibrium"}),
    "water": ("ase", "water/pretrain", {"dataset": "water", "group_by": "frame", "frame_kind": "md"}),
}


# ------------------------------------------------------------------ the platform's entry points
def preprocess(corpus: str, raw: Path, output: Path, options: dict) -> dict:
    """Raw corpus -> graph shards + manifest (atomforge.pipeline, in-process); returns the manifest's counts."""
    from atomforge.corpora import read_corpus
    from atomforge.pipeline import PipelineConfig, run_pipeline

    config = PipelineConfig.for_corpus(corpus, str(raw), str(output), cutoff=CUTOFF, max_neighbors=MAX_NEIGHBORS,
                                       split_fractions=SPLIT, reader_options=options)
    manifest = run_pipeline(config, read_corpus(corpus, str(raw), **options), backend="local")
    return manifest["counts"]


def pretrain(config) -> Path:
    """Run a pretraining `TrainConfig` to its last step (Ray Train local mode); returns the run directory."""
    from atomforge.training.launch import train

    train(config)
    return Path(config.checkpoint.output)


def finetune(config, checkpoint: str | None) -> dict[str, Any]:
    """Fine-tune from `checkpoint` (None: the same backbone from scratch); metrics per split and the budget."""
    from atomforge.finetune.run import run_variant

    summary = run_variant(config, checkpoint, "pretrained" if checkpoint else "scratch", log=lambda *_: None)
    return {"metrics": summary.metrics, "sizes": summary.sizes, "epochs": summary.epochs,
            "optimizer_steps": summary.optimizer_steps, "best_epoch": summary.best_epoch}


def prepare_downstream(raw: str, output: Path, options: dict) -> dict:
    """A downstream file -> shards for fine-tuning (atomforge.pipeline.downstream, in-process); the manifest's counts."""
    from atomforge.pipeline.downstream import prepare_downstream as prepare

    return prepare(raw, str(output), cutoff=CUTOFF, max_neighbors=MAX_NEIGHBORS, **options)["counts"]


# ------------------------------------------------------------------ configs from the design
def pretrain_config(arm: str, budget: Budget, seed: int, shards: Path, output: Path):
    """The TrainConfig of pretraining arm `arm` for `seed`: the shared backbone, optimiser and step budget."""
    from atomforge.datasets import task_spec
    from atomforge.recipes.jmp import mix
    from atomforge.training.config import (
        CheckpointConfig,
        DataConfig,
        OptimConfig,
        ScalingConfig,
        TaskData,
        TrainConfig,
    )

    design = PRETRAINING[arm]
    steps = budget.pretrain_steps[design.family]
    tasks = {}
    for name in design.tasks:
        base = task_spec(name)
        spec = dataclasses.replace(base, cutoff=CUTOFF, max_neighbors=MAX_NEIGHBORS)
        tasks[name] = TaskData(spec, str(shards / name))
    return TrainConfig(
        name=f"{arm}-seed{seed}",
        data=DataConfig(tasks=tasks, temperature=2.0, max_atoms=budget.pretrain_atoms, chunk_rows=16,
                        shuffle_rows=128, val_max_structures=64),
        model=BACKBONE, objectives=mix(*design.objectives()),
        optim=OptimConfig(lr=1e-3, warmup_steps=max(1, steps // 20), ema_decay=0.99),
        scaling=ScalingConfig(num_workers=0),
        checkpoint=CheckpointConfig(output=str(output), every_steps=steps, num_to_keep=1),
        max_steps=steps, seed=seed, log_every=max(1, steps // 10), val_every=steps,
    )


def downstream(family: str, dataset: str, corpora: Path) -> tuple[str, str, dict]:
    """(raw path, task name, preprocessing options) of a downstream set."""
    if family == "molecules":
        return str(corpora / "rmd17" / f"rmd17_{dataset}.npz"), f"rmd17_{dataset}", {}
    if family == "water":
        return str(corpora / "water" / "finetune" / "water.extxyz"), "water_ft", {"dataset": "water_ft"}
    return (str(corpora / "bulk" / "bulk_modulus" / "cells.extxyz"), "bulk_modulus",
            {"dataset": "bulk_modulus", "property_key": "bulk_modulus", "property_per_atom": True})


def downstream_shards(shards: Path, family: str, dataset: str) -> Path:
    return shards / "downstream" / f"{family}_{dataset}"


def finetune_config(arm: Finetuning, dataset: str, budget: Budget, seed: int, shards: Path, output: Path):
    """The fine-tuning TrainConfig of `arm` on `dataset`: the shared optimiser (uniform learning rates) and
    epoch budget, every epoch run (model selection on validation, no early stop)."""
    from atomforge.objectives import MixEntry
    from atomforge.recipes.finetune import dens_md17, finetuning, supervised
    from atomforge.recipes.finetune import downstream as downstream_task
    from atomforge.training.config import EpochBudget, OptimConfig, Subset

    family = arm.family
    _, task, options = downstream(family, dataset, Path("."))
    prop = "property_key" in options
    subset = Subset(budget.num_train[family], budget.num_val[family], budget.num_test[family], seed=seed)
    data = downstream_task(task, str(downstream_shards(shards, family, dataset)), subset,
                           dataset=options.get("dataset", "rmd17"), cutoff=CUTOFF, max_neighbors=MAX_NEIGHBORS,
                           force_weight=0.0 if prop else 10.0, reference_fit="mean_per_atom" if prop else "least_squares",
                           per_atom=prop)
    epochs = budget.finetune_epochs[family]
    optim = OptimConfig(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, warmup_start_factor=0.2, min_lr_factor=0.1,
                        grad_clip=10.0, ema_decay=0.99)
    objectives = {"dens": MixEntry(dens_md17(forces="gradient"))} if arm.dens_auxiliary else supervised(
        None if prop else "gradient")
    config = finetuning(f"{family}-{dataset}-{arm.name}-seed{seed}", data, BACKBONE, objectives,
                        optim, EpochBudget(max_epochs=epochs, warmup_epochs=max(1, epochs // 20)), budget.batch_size,
                        patience=None, output=str(output))
    return dataclasses.replace(config, seed=seed)


# ------------------------------------------------------------------ jobs (module-level: they run in workers)
def _single_thread() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def corpus_job(root: str, part: str, size: str) -> dict:
    """Write one replication corpus part (skipped when its marker exists)."""
    marker = Path(root) / f".{part}.{size}.done"
    if marker.exists():
        return json.loads(marker.read_text())
    from atomforge.corpora.demo import make_replication_part

    start = time.perf_counter()
    counts = {**make_replication_part(root, part, size=size), "seconds": round(time.perf_counter() - start, 1)}
    marker.write_text(json.dumps(counts))
    return counts


def shard_job(corpora: str, shards: str, dataset: str) -> dict:
    """Preprocess one dataset; its manifest (the job's result file) is written last, by the pipeline."""
    corpus, raw, options = DATASETS[dataset]
    preprocess(corpus, Path(corpora) / raw, Path(shards) / dataset, options)
    return json.loads((Path(shards) / dataset / "manifest.json").read_text())


def downstream_job(corpora: str, shards: str, family: str, dataset: str) -> dict:
    """Preprocess one downstream set for fine-tuning; its manifest (the job's result file) is written last."""
    raw, _, options = downstream(family, dataset, Path(corpora))
    target = downstream_shards(Path(shards), family, dataset)
    prepare_downstream(raw, target, options)
    return json.loads((target / "manifest.json").read_text())


def pretrain_job(arm: str, mode: str, seed: int, shards: str, output: str) -> dict:
    """Pretraining arm for one seed; result.json records the steps run and the final validation metrics."""
    from replication.design import BUDGETS

    result_file = Path(output) / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    start = time.perf_counter()
    run = pretrain(pretrain_config(arm, BUDGETS[mode], seed, Path(shards), Path(output)))
    records = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    result = {"arm": arm, "seed": seed, "optimizer_steps": train[-1]["step"] if train else 0,
              "val": {k: v for k, v in (val[-1] if val else {}).items() if k.startswith("val/")},
              "seconds": round(time.perf_counter() - start, 1)}
    result_file.write_text(json.dumps(result, indent=2))
    return result


def finetune_job(arm: Finetuning, dataset: str, mode: str, seed: int, shards: str, checkpoint: str | None,
                 output: str) -> dict:
    """Fine-tuning arm on one set for one seed; result.json holds metrics per split and the steps run."""
    from replication.design import BUDGETS

    result_file = Path(output) / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    start = time.perf_counter()
    config = finetune_config(arm, dataset, BUDGETS[mode], seed, Path(shards), Path(output))
    result = {"arm": arm.name, "dataset": dataset, "seed": seed, **finetune(config, checkpoint),
              "seconds": round(time.perf_counter() - start, 1)}
    Path(output).mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result, indent=2))
    return result


def run_all(jobs: Iterable[tuple[Callable, tuple, Path]], workers: int, log: Callable[[str], None]) -> list:
    """Run (function, args, result file) jobs on `workers` single-threaded processes; a job whose result
    file exists is read instead of run (no process is started for it)."""
    jobs = list(jobs)
    results: list = [json.loads(path.read_text()) if path.exists() else None for _, _, path in jobs]
    todo = [i for i, r in enumerate(results) if r is None]
    if todo and workers <= 1:
        _single_thread()
        for i in todo:
            results[i] = _logged(jobs[i][0], jobs[i][1], log)
    elif todo:
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=get_context("spawn"),
                                 initializer=_single_thread) as pool:
            futures = {i: pool.submit(jobs[i][0], *jobs[i][1]) for i in todo}
            for i, future in futures.items():
                results[i] = future.result()
                log(f"  done {jobs[i][0].__name__} {_describe(jobs[i][1])}")
    return results


def _logged(fn: Callable, args: tuple, log: Callable[[str], None]):
    result = fn(*args)
    log(f"  done {fn.__name__} {_describe(args)}")
    return result


def _describe(args: tuple) -> str:
    return " ".join(str(getattr(a, "name", a)) for a in args if not str(a).startswith("/"))
