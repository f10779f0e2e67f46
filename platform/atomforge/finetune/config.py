"""Typed configuration of a fine-tuning run: the downstream data, the target, the optimiser, the budget.

A recipe (`atomforge.recipes.finetune`) returns a whole `FinetuneConfig`; `jobs/finetune.py` changes
a few fields with `--set a.b=value` (the same override rules as pretraining,
`atomforge.training.config.apply_overrides`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from atomforge.objectives import JMPSupervised, MixEntry

DATA_FORMATS = ("auto", "rmd17", "ase")
TARGETS = ("energy_forces", "property")
FORCE_MODES = ("gradient", "direct")
POOLINGS = ("sum", "mean")

# JMP fine-tuning (OBJECTIVES.md §1): embedding 0.3, the six GemNet-OC blocks 0.55 ... 0.625, heads 1.
JMP_EMBEDDING_LR = 0.3
JMP_BLOCK_LR = (0.55, 0.40, 0.30, 0.40, 0.55, 0.625)


@dataclass(frozen=True)
class DataSpec:
    """The downstream set and its split.

    path: an rMD17 `.npz` (or a folder of them) or anything ASE reads (extxyz, traj, ASE db);
    format: "auto" (by suffix), "rmd17" or "ase". num_train / num_val: structures drawn (seeded,
    without replacement); num_test: the rest when None, else at most that many.
    """

    path: str = ""
    format: str = "auto"
    num_train: int = 950
    num_val: int = 50
    num_test: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.format not in DATA_FORMATS:
            raise ValueError(f"data.format must be one of {DATA_FORMATS}, got {self.format!r}")
        for name in ("num_train", "num_val"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_test is not None and self.num_test < 1:
            raise ValueError(f"data.num_test must be >= 1 or None, got {self.num_test}")


@dataclass(frozen=True)
class TargetSpec:
    """What the new heads predict.

    kind "energy_forces": energy (eV) and forces (eV/Å), forces "gradient" (-∂E/∂x, conservative;
    JMP's choice on rMD17) or "direct" (a force head). kind "property": one per-structure scalar read
    from the ASE info / key_value_pairs key `key`, pooled from per-atom outputs by `pooling`.
    """

    kind: str = "energy_forces"
    task: str = "rmd17"  # name of the new task (its heads and statistics)
    forces: str = "gradient"
    key: str = ""  # property kind only
    pooling: str = "sum"  # property kind only
    energy_weight: float = 1.0  # λ_E on |ΔE|/s_E
    force_weight: float = 10.0  # λ_F on the structure-wise force L2MAE / s_F
    cutoff: float | None = None  # Å; None = the backbone's cutoff (any other value is an error)
    max_neighbors: int | None = 30
    dens_md_frames: bool = True  # DeNS may corrupt MD frames (the DeNS MD17 code does; rMD17 is all MD)

    def __post_init__(self) -> None:
        if self.kind not in TARGETS:
            raise ValueError(f"target.kind must be one of {TARGETS}, got {self.kind!r}")
        if self.forces not in FORCE_MODES:
            raise ValueError(f"target.forces must be one of {FORCE_MODES}, got {self.forces!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"target.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.kind == "property" and not self.key:
            raise ValueError("target.key must name the info / key_value_pairs entry for kind 'property'")
        if not self.task:
            raise ValueError("target.task must be a non-empty task name")


@dataclass(frozen=True)
class FinetuneOptim:
    """AdamW with JMP's layer-wise multipliers, warmup then cosine, EMA, early stopping on val.

    Budget: `max_epochs` passes over the train split in batches of `batch_size` structures;
    validation after each epoch; stop when the val metric has not improved for `patience` epochs.
    block_lr is resampled by relative depth when the backbone has another number of blocks.
    """

    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    embedding_lr: float = JMP_EMBEDDING_LR
    block_lr: tuple[float, ...] = JMP_BLOCK_LR
    head_lr: float = 1.0
    warmup_epochs: int = 1
    warmup_start_factor: float = 0.2
    min_lr_factor: float = 0.1
    grad_clip: float = 10.0
    ema_decay: float = 0.99  # 0 disables
    batch_size: int = 8
    max_epochs: int = 100
    patience: int = 20

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"optim.ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in ("batch_size", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"optim.{name} must be >= 1, got {getattr(self, name)}")
        if not self.block_lr or min(self.block_lr) <= 0 or self.embedding_lr <= 0 or self.head_lr <= 0:
            raise ValueError("optim: learning-rate multipliers must be positive")


@dataclass(frozen=True)
class FinetuneConfig:
    """A whole fine-tuning run. `checkpoint` is set from the CLI (a run, checkpoint, export or hub id).

    objectives: the fine-tuning loss as an objective mix (name -> MixEntry, as in pretraining), e.g.
    DeNS or Noisy Nodes, which contain the supervised loss; None = the target's supervised loss
    alone (`JMPSupervised(forces=target.forces)`, energy only for a property).
    """

    name: str
    data: DataSpec
    target: TargetSpec = field(default_factory=TargetSpec)
    optim: FinetuneOptim = field(default_factory=FinetuneOptim)
    objectives: Mapping[str, MixEntry] | None = None
    backbone: Any = None  # architecture for runs without a checkpoint (e.g. PaiNNConfig.tiny())
    keep_pretrained_heads: bool = False  # keep the pretraining tasks' heads next to the new one
    use_ema_weights: bool = True  # start from the checkpoint's EMA weights when it has them
    seed: int = 0
    output: str = "runs/finetune"

    def __post_init__(self) -> None:
        for key, entry in (self.objectives or {}).items():
            if key != entry.objective.name:
                raise ValueError(f"objectives[{key!r}] holds objective {entry.objective.name!r}; key it by that name")
            forces = entry.objective.forces
            if entry.objective.supervised and self.target.kind == "energy_forces" and forces not in (None, self.target.forces):
                raise ValueError(f"objectives[{key!r}] trains {forces} forces but target.forces is {self.target.forces!r}")

    def objective_entries(self) -> list[MixEntry]:
        """The mix's entries: `objectives`, or the target's supervised loss alone."""
        if self.objectives:
            return list(self.objectives.values())
        forces = self.target.forces if self.target.kind == "energy_forces" else None
        return [MixEntry(JMPSupervised(forces=forces))]
