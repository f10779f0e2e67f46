"""Fine-tuning recipes: each function returns a whole `TrainConfig` for the one trainer; variants derive from a base.

    rmd17()          JMP's rMD17 protocol: 950 train / 50 val, gradient forces, layer-wise LR, EMA
    rmd17_dens(), rmd17_noisy_nodes()   rmd17 with a DeNS (MD17 settings) / Noisy Nodes auxiliary
    rmd17_debug()    the demo: the demo rMD17 shards, a few minutes on a CPU for pretrained + scratch
    rmd17_debug_dens(), rmd17_debug_noisy_nodes()   the same auxiliaries on the demo setup
    property_sum() / property_mean()   a per-structure property preprocessed from an ASE db / extxyz key
    continue_task(task)   kept heads and statistics on a pretraining task (starts exactly where the model is)
    with_replay(config, task, url, weight)   replay a pretraining task's shards against forgetting
    with_downstream(config, {name: url})     several downstream tasks in one run, each with its own head

A downstream set is preprocessed to shards first (`python pipelines/downstream.py`, or
`atomforge.pipeline.downstream.prepare_downstream`); the recipe's `Subset` draws its exact counts
from them. `python jobs/finetune.py --recipe NAME` looks the function up in `RECIPES`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from atomforge.datasets import task_spec
from atomforge.models.painn import PaiNNConfig
from atomforge.objectives import DeNS, JMPSupervised, MixEntry, NoisyNodes
from atomforge.shards import open_shards
from atomforge.tasks import TaskSpec
from atomforge.training.config import (
    CheckpointConfig,
    DataConfig,
    EarlyStopping,
    EpochBudget,
    InitConfig,
    LayerLR,
    OptimConfig,
    ScalingConfig,
    Subset,
    TaskData,
    TrainConfig,
)

DEMO_RMD17 = "demo_out/shards/rmd17"  # make demo preprocesses the demo rMD17 file here


def downstream(name: str, url: str, subset: Subset, *, dataset: str = "", energy_weight: float = 1.0,
               force_weight: float = 10.0, cutoff: float = 5.0, max_neighbors: int = 30,
               reference_fit: str = "least_squares", per_atom: bool = False) -> TaskData:
    """A downstream task: its shards, exact counts, statistics fitted on its training rows (new heads' normalisers).

    DeNS may corrupt its MD frames (dens_md_frames, as the DeNS MD17 code)."""
    spec = TaskSpec(name, cutoff=cutoff, max_neighbors=max_neighbors, energy_weight=energy_weight,
                    force_weight=force_weight, mean_reference="atom", dens_md_frames=True)
    return TaskData(spec, url, dataset=dataset, subset=subset, statistics="train", reference_fit=reference_fit,
                    per_atom=per_atom)


def finetuning(name: str, task: TaskData, model, objectives: Mapping[str, MixEntry], optim: OptimConfig,
               epochs: EpochBudget, batch_size: int, patience: int | None, output: str,
               init: InitConfig | None = None) -> TrainConfig:
    """The fine-tuning shape of a TrainConfig: one task in epoch-aligned batches of `batch_size`
    structures, validation every epoch (and at step 0), early stopping with model selection, one CPU worker."""
    data = DataConfig(tasks={task.spec.name: task}, batching="epochs", max_atoms=1_000_000, max_structures=batch_size,
                      chunk_rows=16, shuffle_rows=100_000, val_max_structures=100_000)
    return TrainConfig(name=name, kind="finetune", data=data, model=model, objectives=dict(objectives), optim=optim,
                       scaling=ScalingConfig(num_workers=0), checkpoint=CheckpointConfig(output=output, num_to_keep=1),
                       epochs=epochs, early_stopping=EarlyStopping(patience=patience), validate_at_start=True,
                       init=init or InitConfig())


def supervised(forces: str | None = "gradient") -> dict[str, MixEntry]:
    """The fine-tuning loss: JMP's supervised energy + force loss (forces None: energy only, a property)."""
    return {"jmp": MixEntry(JMPSupervised(forces=forces))}


def rmd17() -> TrainConfig:
    """JMP on rMD17: 950 / 50 structures, conservative forces, energy:force 1:10 (normalised), JMP's
    layer-wise LR (embedding 0.3, blocks 0.55 ... 0.625), AdamW 5e-4, EMA 0.99, 300 epochs, patience 50."""
    optim = OptimConfig(lr=5e-4, betas=(0.9, 0.95), weight_decay=0.1, warmup_start_factor=0.2, min_lr_factor=0.1,
                        grad_clip=10.0, ema_decay=0.99, layer_lr=LayerLR())
    return finetuning("rmd17", downstream("rmd17", "shards/rmd17_aspirin", Subset(950, 50)), PaiNNConfig.small(),
                      supervised("gradient"), optim, EpochBudget(max_epochs=300, warmup_epochs=5), batch_size=8,
                      patience=50, output="runs/finetune/rmd17")


def rmd17_debug() -> TrainConfig:
    """The demo: the demo rMD17 shards (200 train / 50 val / rest test), 150 epochs, ~1 min per variant on
    a CPU (one torch thread; at 30 epochs the tiny model is still on its initial plateau). One seed: a
    check that the flow works, not a measurement of pretraining's worth (see docs/replication.md)."""
    base = rmd17()
    task = dataclasses.replace(base.data.tasks["rmd17"], url=DEMO_RMD17, subset=Subset(200, 50))
    # Uniform learning rates: JMP's layer-wise multipliers (0.3-0.625 below the heads) suit long
    # fine-tuning of large, well-pretrained backbones; this tiny model is pretrained for 400 steps.
    # The demo's pretrained-vs-scratch numbers are one seed and do not show a gain over seeds
    # (issue 12): the measured comparison is docs/replication.md.
    optim = dataclasses.replace(base.optim, lr=2e-3, ema_decay=0.9, layer_lr=None)
    return finetuning("rmd17_debug", task, PaiNNConfig.tiny(), base.objectives, optim,
                      EpochBudget(max_epochs=150, warmup_epochs=1), batch_size=16, patience=30,
                      output="runs/finetune/rmd17_debug")


def dens_md17(forces: str = "gradient") -> DeNS:
    """DeNS as released for MD17 (OBJECTIVES.md §2): per-structure gate p 0.25, a quarter of the free
    atoms corrupted, σ 0.05 Å, λ_D 5 decaying linearly to 0, force encoding. The uncorrupted atoms'
    forces are `forces` (-∂E/∂x on rMD17, JMP's choice). rMD17 frames are MD frames: the downstream
    task lets DeNS corrupt them (TaskSpec.dens_md_frames, True as in the MD17 code)."""
    return DeNS(probability=0.25, gate="structure", ratio=0.25, sigma=0.05, noise_weight=5.0, decay=True, forces=forces)


def noisy_nodes_molecules(forces: str = "gradient") -> NoisyNodes:
    """Noisy Nodes with SCD's fine-tuning values for molecules: σ 0.005 Å, weight 0.1."""
    return NoisyNodes(sigma=0.005, weight=0.1, forces=forces)


def with_auxiliary(config: TrainConfig, objective, name: str) -> TrainConfig:
    """`config` whose loss is `objective` (an objective containing the supervised loss: DeNS, NoisyNodes)."""
    output = f"{config.checkpoint.output}_{objective.name}"
    return dataclasses.replace(config, name=name, objectives={objective.name: MixEntry(objective)},
                               checkpoint=dataclasses.replace(config.checkpoint, output=output))


def rmd17_dens() -> TrainConfig:
    """rmd17 with the DeNS auxiliary (MD17 settings, conservative forces on uncorrupted atoms)."""
    return with_auxiliary(rmd17(), dens_md17(), "rmd17_dens")


def rmd17_noisy_nodes() -> TrainConfig:
    """rmd17 with a Noisy Nodes auxiliary (σ 0.005 Å, weight 0.1)."""
    return with_auxiliary(rmd17(), noisy_nodes_molecules(), "rmd17_noisy_nodes")


def rmd17_debug_dens() -> TrainConfig:
    """The demo setup with the DeNS auxiliary."""
    return with_auxiliary(rmd17_debug(), dens_md17(), "rmd17_debug_dens")


def rmd17_debug_noisy_nodes() -> TrainConfig:
    """The demo setup with a Noisy Nodes auxiliary."""
    return with_auxiliary(rmd17_debug(), noisy_nodes_molecules(), "rmd17_debug_noisy_nodes")


def property_sum() -> TrainConfig:
    """An extensive per-structure property (preprocessed with `--property KEY`), sum pooling, energy-only loss."""
    base = rmd17_debug()
    task = downstream("property", "shards/property", Subset(80, 10), dataset="property", force_weight=0.0)
    return finetuning("property_sum", task, base.model, supervised(None), base.optim, EpochBudget(max_epochs=150),
                      batch_size=16, patience=30, output="runs/finetune/property_sum")


def property_mean() -> TrainConfig:
    """An intensive property (preprocessed with `--property KEY --per-atom`): one shared per-atom reference
    (the train mean), selected and reported per atom."""
    base = property_sum()
    task = dataclasses.replace(base.data.tasks["property"], reference_fit="mean_per_atom", per_atom=True)
    return dataclasses.replace(base, name="property_mean", data=dataclasses.replace(base.data, tasks={"property": task}),
                               checkpoint=dataclasses.replace(base.checkpoint, output="runs/finetune/property_mean"))


def continue_task(task: str, url: str = "") -> TrainConfig:
    """Fine-tuning that continues pretraining task `task` from a pretrained model: its kept head, graph and
    statistics, its shards' own splits, batches as in pretraining (the atom budget), a small lr, a step
    budget. With the pretraining run's data settings, its validation at step 0 is the pretrained model's
    validation, exactly (tests/finetune/test_step0.py)."""
    base = rmd17_debug()
    data = DataConfig(tasks={task: TaskData(dataclasses.replace(task_spec(task), cutoff=base.model.cutoff),
                                            url, statistics="pretrained")}, max_atoms=192, chunk_rows=16,
                      shuffle_rows=64, val_max_structures=256)
    return TrainConfig(name=f"continue_{task}", kind="finetune", data=data, model=base.model,
                       objectives={"jmp": MixEntry(JMPSupervised())}, optim=dataclasses.replace(base.optim, lr=1e-4),
                       scaling=ScalingConfig(num_workers=0),
                       checkpoint=CheckpointConfig(output=f"runs/finetune/continue_{task}", every_steps=100, num_to_keep=1),
                       init=InitConfig(keep_heads=True), early_stopping=EarlyStopping(), max_steps=200, log_every=20,
                       val_every=50, validate_at_start=True)


def with_replay(config: TrainConfig, task: str, url: str, weight: float) -> TrainConfig:
    """`config` replaying pretraining task `task` (its shards at `url`) at mixing weight `weight` against
    the downstream tasks' total of 1 (`training.data.task_probabilities`; 0.5: a third of the structures).

    The replay task keeps the pretrained model's head, graph and statistics (statistics "pretrained",
    never refitted on the downstream set), so every pretrained head is kept (`init.keep_heads`); its
    loss scales are its corpus's record (`atomforge.datasets`). Batches mix tasks (batching "mixed");
    an epoch stays one pass over the downstream rows, so the epoch budget and model selection mean
    what they did. The fine-tuning mix's force mode applies to the replay task too."""
    if task in config.data.tasks:
        raise ValueError(f"--replay {task}: already a task of {config.name} ({sorted(config.data.tasks)})")
    spec = dataclasses.replace(task_spec(task), cutoff=float(config.model.cutoff))
    replay = TaskData(spec, url, weight=weight, statistics="pretrained", replay=True)
    data = dataclasses.replace(config.data, tasks={**config.data.tasks, task: replay}, batching="mixed")
    return dataclasses.replace(config, data=data, init=dataclasses.replace(config.init, keep_heads=True))


def with_downstream(config: TrainConfig, urls: Mapping[str, str]) -> TrainConfig:
    """`config` fine-tuning the downstream tasks named in `urls` (name -> shard dataset), and only those.

    A name that is a task of the recipe keeps that task's settings; any other name is a new task with
    the settings of the recipe's first downstream task (subset, statistics, loss scales), its own head,
    normalisers, references and metrics, reading the dataset of its shards (their only one, unless one
    is named like the task). Several downstream tasks mix in one batch (batching "mixed") in
    proportion to their training rows (temperature 1), so an epoch is one pass over each; replay
    tasks are kept. Model selection sums the tasks' scores (`training.config.EarlyStopping`)."""
    if not urls:
        return config
    downstream, replay = config.downstream_tasks(), {t: d for t, d in config.data.tasks.items() if d.replay}
    template = config.data.tasks[downstream[0]]
    tasks = {}
    for name, url in urls.items():
        if name in replay:
            raise ValueError(f"--data {name}: {name!r} is a replay task; give its shards with --replay")
        known = config.data.tasks.get(name)
        tasks[name] = (dataclasses.replace(known, url=url) if known is not None else dataclasses.replace(
            template, spec=dataclasses.replace(template.spec, name=name), url=url,
            dataset=shard_dataset(url, name, template.dataset_name)))
    several = {"batching": "mixed", "temperature": 1.0} if len(tasks) > 1 else {}
    return dataclasses.replace(config, data=dataclasses.replace(config.data, tasks={**tasks, **replay}, **several))


def shard_dataset(url: str, name: str, default: str) -> str:
    """The dataset a new task `name` reads at `url`: `name` or its manifest's only dataset, else `default`."""
    try:
        datasets = sorted(open_shards(url).manifest.get("statistics", {}))
    except (ValueError, OSError) as error:
        raise ValueError(f"task {name!r}: {error}") from error
    if name in datasets:
        return ""
    return datasets[0] if len(datasets) == 1 else default


RECIPES: dict[str, Callable[[], TrainConfig]] = {
    "rmd17": rmd17,
    "rmd17_dens": rmd17_dens,
    "rmd17_noisy_nodes": rmd17_noisy_nodes,
    "rmd17_debug": rmd17_debug,
    "rmd17_debug_dens": rmd17_debug_dens,
    "rmd17_debug_noisy_nodes": rmd17_debug_noisy_nodes,
    "property_sum": property_sum,
    "property_mean": property_mean,
}


def recipe(name: str) -> TrainConfig:
    """The config of recipe `name`; ValueError listing the known names otherwise."""
    if name not in RECIPES:
        raise ValueError(f"unknown fine-tuning recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]()


__all__ = ["RECIPES", "recipe", "rmd17", "rmd17_dens", "rmd17_noisy_nodes", "rmd17_debug", "rmd17_debug_dens",
           "rmd17_debug_noisy_nodes", "dens_md17", "noisy_nodes_molecules", "with_auxiliary", "property_sum",
           "property_mean", "continue_task", "downstream", "finetuning", "supervised", "with_replay", "with_downstream"]
