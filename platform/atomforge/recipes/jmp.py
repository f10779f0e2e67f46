"""JMP-style pretraining recipes: each function returns a whole `TrainConfig`; variants derive from a base.

    debug_cpu()        2 CPU workers, tiny PaiNN, the demo shards: the `make demo` pretraining (minutes)
    debug_gemnet()     the same setup with tiny GemNet-OC, 20 steps
    jmp_s(), jmp_l()   GPU runs of GemNet-OC at JMP-S / JMP-L sizes with JMP's tasks (loss scales, from
                       the corpora's records in `atomforge.datasets`),
                       T = 2 and JMP's optimiser
    jmp_dens(), scd(), jmp_scd(), derivative_ff(), denoise()   objective mixes over jmp_s
    debug_<mix>        any mix on the debug_cpu setup (e.g. debug_jmp_dens)

`python jobs/jmp_pretrain.py --recipe NAME` looks the function up in `RECIPES`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from atomforge.datasets import PRETRAINING, dataset_spec, dens_values
from atomforge.models.gemnet_oc import GemNetOCConfig
from atomforge.models.painn import PaiNNConfig
from atomforge.objectives import SCD, CoordinateDenoising, DeNS, DerivativeForceField, JMPSupervised, MixEntry
from atomforge.training.config import (
    CheckpointConfig,
    DataConfig,
    OptimConfig,
    ScalingConfig,
    TaskData,
    TrainConfig,
)

DEMO_SHARDS = "data/demo/shards"  # `make demo` writes one published dataset per corpus under this root


def task_table(urls: Mapping[str, str], **spec_changes) -> dict[str, TaskData]:
    """The corpora's JMP tasks (their `atomforge.datasets` records) with data URLs; `spec_changes` apply to
    every TaskSpec."""
    return {name: TaskData(dataclasses.replace(dataset_spec(name).task, **spec_changes), url) for name, url in urls.items()}


def mix(*entries: MixEntry) -> dict[str, MixEntry]:
    """An objective mix keyed by objective name."""
    return {entry.objective.name: entry for entry in entries}


def with_objectives(config: TrainConfig, *entries: MixEntry, name: str | None = None) -> TrainConfig:
    """`config` with another objective mix (and run name)."""
    return dataclasses.replace(config, objectives=mix(*entries), name=name or config.name)


# ------------------------------------------------------------------ CPU
def debug_cpu() -> TrainConfig:
    """The demo: 4 tasks from the demo shards, tiny PaiNN, 2 gloo workers, 400 steps (~1.5 min on 2 cores).

    400 steps, not fewer: after 60 steps the backbone was still near its initialisation. The demo's
    pretrained-vs-scratch comparison is one seed; over seeds it shows no gain (docs/replication.md).
    """
    model = PaiNNConfig.tiny()
    return TrainConfig(
        name="debug_cpu",
        data=DataConfig(
            tasks=task_table({t: f"{DEMO_SHARDS}/{t}" for t in PRETRAINING}, cutoff=model.cutoff, max_neighbors=20),
            temperature=2.0,
            max_atoms=192,
            chunk_rows=16,
            shuffle_rows=64,
            val_max_structures=24,
        ),
        model=model,
        objectives=mix(MixEntry(JMPSupervised())),
        optim=OptimConfig(lr=1e-3, warmup_steps=10, ema_decay=0.9),
        scaling=ScalingConfig(num_workers=2, max_failures=1),
        checkpoint=CheckpointConfig(output="runs/debug_cpu", every_steps=100, num_to_keep=2),
        max_steps=400,
        log_every=20,
        val_every=100,
    )


def debug_gemnet() -> TrainConfig:
    """debug_cpu with tiny GemNet-OC for 20 steps: every task's graph is the model's (5 Å, K = 30), JMP's lr 3e-4.

    With its scale factors fitted (the trainer does before step 1) GemNet-OC's messages start at unit
    variance; at debug_cpu's PaiNN lr of 1e-3 the 20-step run spiked (loss ~1900 at step 15 on the
    tests' tiny shards), at 3e-4 it trains smoothly."""
    base, model = debug_cpu(), GemNetOCConfig.tiny()
    return dataclasses.replace(
        base,
        name="debug_gemnet",
        model=model,
        data=dataclasses.replace(base.data, tasks=model_graphs(base.data.tasks, model)),
        optim=dataclasses.replace(base.optim, lr=3e-4),
        checkpoint=dataclasses.replace(base.checkpoint, output="runs/debug_gemnet", every_steps=10),
        max_steps=20,
        log_every=5,
        val_every=10,
    )


def model_graphs(tasks: Mapping[str, TaskData], model) -> dict[str, TaskData]:
    """The tasks with the model's graph: its cutoff and, where it declares one (GemNet-OC), its K."""
    changes = {"cutoff": model.cutoff} | ({"max_neighbors": model.max_neighbors} if hasattr(model, "max_neighbors") else {})
    return {name: dataclasses.replace(task, spec=dataclasses.replace(task.spec, **changes)) for name, task in tasks.items()}


# ------------------------------------------------------------------ GPU
def jmp_s() -> TrainConfig:
    """JMP-S: GemNet-OC at JMP-S size, JMP's table and optimiser (AdamW 3e-4, (0.9, 0.95), wd 0.1, 2000
    warmup steps from 0.2·lr, cosine to 0.1·lr, clip 1, EMA 0.99), T = 2, bf16, 8 GPUs.

    Every task's graph is the model's (one cutoff owner, `training.config.check_cutoffs`): 12 Å and
    K = 1000, GemNet-OC's atom-atom graph, from which the model takes its main (30), atom-edge (20)
    and quadruplet (8) neighbours; so the shards are stored at 12 Å with K_store >= 1000. JMP cut
    the molecular corpora at 8 Å; one backbone has one envelope here."""
    model = GemNetOCConfig.small()
    return TrainConfig(
        name="jmp_s",
        data=DataConfig(
            tasks=model_graphs(task_table({t: f"s3://atomforge/shards/{t}" for t in PRETRAINING}), model),
            temperature=2.0,
            max_atoms=1024,
            chunk_rows=1024,
            shuffle_rows=16384,
            val_max_structures=2048,
            num_workers=6,  # loader processes per GPU (of cpus_per_worker=8): batches are built ahead
        ),
        model=model,
        objectives=mix(MixEntry(JMPSupervised())),
        optim=OptimConfig(),
        scaling=ScalingConfig(num_workers=8, use_gpu=True, cpus_per_worker=8, amp="bf16", max_failures=3),
        checkpoint=CheckpointConfig(output="s3://atomforge/runs/jmp_s", every_steps=2000, num_to_keep=3),
        max_steps=200_000,
        log_every=50,
        val_every=5000,
    )


def jmp_l() -> TrainConfig:
    """JMP-L: GemNet-OC at JMP-L size on 32 GPUs, otherwise jmp_s."""
    base, model = jmp_s(), GemNetOCConfig.large()
    return dataclasses.replace(
        base,
        name="jmp_l",
        model=model,
        data=dataclasses.replace(base.data, max_atoms=512, tasks=model_graphs(base.data.tasks, model)),
        scaling=dataclasses.replace(base.scaling, num_workers=32),
        checkpoint=dataclasses.replace(base.checkpoint, output="s3://atomforge/runs/jmp_l"),
        max_steps=400_000,
    )


# ------------------------------------------------------------------ objective mixes
def dens() -> DeNS:
    """DeNS as released for OC20/OC22 (batch gate p = 0.5, half the free atoms corrupted), σ and λ_D per
    corpus from its `atomforge.datasets` record; contains the supervised loss, so it replaces
    JMPSupervised rather than adding to it."""
    return DeNS(probability=0.5, ratio=0.5, sigma=dens_values("dens_sigma"), noise_weight=dens_values("dens_noise_weight"))


def jmp_dens() -> TrainConfig:
    """JMP supervised multi-task training with DeNS samples mixed in."""
    return with_objectives(jmp_s(), MixEntry(dens()), name="jmp_dens")


def scd() -> TrainConfig:
    """Self-conditioned denoising alone (label-free), with SCD's optimiser (AdamW 5e-4, wd 0.05, 10k warmup)."""
    base = with_objectives(jmp_s(), MixEntry(SCD()), name="scd")
    return dataclasses.replace(base, optim=dataclasses.replace(base.optim, lr=5e-4, weight_decay=0.05, warmup_steps=10_000))


def jmp_scd() -> TrainConfig:
    """JMP supervised + SCD as an auxiliary label-free term."""
    return with_objectives(jmp_s(), MixEntry(JMPSupervised()), MixEntry(SCD(), 1.0), name="jmp_scd")


def derivative_ff() -> TrainConfig:
    """Derivative force-field pretraining (forces -∂E/∂x, stress from strain), energy:force:stress 1:500:500."""
    return with_objectives(jmp_s(), MixEntry(DerivativeForceField()), name="derivative_ff")


def denoise() -> TrainConfig:
    """Coordinate denoising (Zaidi et al.: σ 0.04 Å, MSE on ε/σ from a vector head), the baseline."""
    return with_objectives(jmp_s(), MixEntry(CoordinateDenoising()), name="denoise")


def debug(base: Callable[[], TrainConfig]) -> Callable[[], TrainConfig]:
    """The CPU demo setup with `base`'s objective mix (e.g. debug(jmp_dens) for a quick CPU check)."""

    def build() -> TrainConfig:
        config = base()
        return dataclasses.replace(debug_cpu(), objectives=config.objectives, name=f"debug_{config.name}")

    build.__doc__ = f"{base.__name__} on the debug_cpu setup."
    return build


RECIPES: dict[str, Callable[[], TrainConfig]] = {
    "debug_cpu": debug_cpu,
    "debug_gemnet": debug_gemnet,
    "jmp_s": jmp_s,
    "jmp_l": jmp_l,
    "jmp_dens": jmp_dens,
    "scd": scd,
    "jmp_scd": jmp_scd,
    "derivative_ff": derivative_ff,
    "denoise": denoise,
}
RECIPES |= {f"debug_{name}": debug(RECIPES[name]) for name in ("jmp_dens", "scd", "jmp_scd", "derivative_ff", "denoise")}


def recipe(name: str) -> TrainConfig:
    """The config of recipe `name`; ValueError listing the known names otherwise."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]()


def with_data(config: TrainConfig, urls: Mapping[str, str]) -> TrainConfig:
    """`config` with some tasks' data URLs replaced (`--data TASK=URL`); unknown task names are an error."""
    unknown = sorted(set(urls) - set(config.data.tasks))
    if unknown:
        raise ValueError(f"--data: unknown task(s) {unknown}; tasks of {config.name}: {sorted(config.data.tasks)}")
    tasks = {t: dataclasses.replace(d, url=urls.get(t, d.url)) for t, d in config.data.tasks.items()}
    return dataclasses.replace(config, data=dataclasses.replace(config.data, tasks=tasks))


def only_tasks(config: TrainConfig, names: tuple[str, ...]) -> TrainConfig:
    """`config` restricted to some tasks (used by tests and small runs)."""
    tasks = {t: config.data.tasks[t] for t in names}
    return dataclasses.replace(config, data=dataclasses.replace(config.data, tasks=tasks))


__all__ = ["RECIPES", "debug_cpu", "debug_gemnet", "jmp_s", "jmp_l", "jmp_dens", "scd", "derivative_ff", "recipe", "with_data"]
