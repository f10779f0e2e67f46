"""The replication benchmark's design as data: backbone, budgets, pretraining arms, fine-tuning arms, claims.

Fixed before any result was looked at (docs/replication.md says why each choice). Every arm of a
comparison shares the backbone, the optimiser and the optimizer-step budget; nothing here is set
per arm except what the method itself is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from atomforge.models.painn import PaiNNConfig
from atomforge.objectives import (
    SCD,
    CoordinateDenoising,
    DerivativeDenoising,
    DerivativeForceField,
    HydrogenMasking,
    JMPSupervised,
    MixEntry,
)
from atomforge.recipes.jmp import dens

CUTOFF, MAX_NEIGHBORS = 5.0, 30  # Å: every corpus is graphed at the model's cutoff
BACKBONE = PaiNNConfig(hidden=64, num_layers=3, num_basis=16, cutoff=CUTOFF, condition_dim=32)
JMP_CORPORA = ("oc20", "oc22", "ani1x", "transition1x")
SPLIT = (0.8, 0.1, 0.1)  # pretraining shards: by group, so small corpora keep validation rows


@dataclass(frozen=True)
class Budget:
    """Optimizer steps and data sizes of one mode (smoke / quick / default)."""

    corpora: str  # ReplicationSize name (atomforge.corpora.demo.REPLICATION_SIZES)
    pretrain_steps: dict[str, int]  # family -> steps
    pretrain_atoms: int  # atom budget of one pretraining micro-batch
    finetune_epochs: dict[str, int]  # family -> epochs (no early stopping: every arm runs them all)
    num_train: dict[str, int]  # family -> downstream training structures
    num_val: dict[str, int]
    num_test: dict[str, int]
    batch_size: int = 16


BUDGETS = {
    # smoke: structure only (every arm runs its budget through the real entry points), so the fewest steps
    # that run an optimizer step, a warmup and a validation: 2 pretraining steps, 1 epoch
    "smoke": Budget("tiny", {"molecules": 2, "bulk": 2, "water": 2}, 128,
                    {"molecules": 1, "bulk": 1, "water": 1}, {"molecules": 16, "bulk": 5, "water": 6},
                    {"molecules": 8, "bulk": 3, "water": 4}, {"molecules": 16, "bulk": 4, "water": 6}),
    # quick: half the first quick budgets (100 / 60 steps, 25 epochs: ~1700 s of CPU), so <= 10 min on 2 cores;
    # water 40 / 15 / 20: the small corpus has 75 downstream frames (50 / 25 / 75 did not fit)
    "quick": Budget("small", {"molecules": 50, "bulk": 30, "water": 30}, 256,
                    {"molecules": 12, "bulk": 12, "water": 12}, {"molecules": 50, "bulk": 25, "water": 40},
                    {"molecules": 30, "bulk": 10, "water": 15}, {"molecules": 160, "bulk": 25, "water": 20}),
    # default: 600 / 400 steps and 40 epochs (from 1000 / 600 and 100): those took ~16,000 s of CPU by a
    # probe of every arm's cost per step, twice the 90 min of 2 cores; cut for every arm alike
    "default": Budget("medium", {"molecules": 600, "bulk": 400, "water": 400}, 256,
                      {"molecules": 40, "bulk": 40, "water": 40}, {"molecules": 100, "bulk": 60, "water": 100},
                      {"molecules": 50, "bulk": 30, "water": 50}, {"molecules": 450, "bulk": 60, "water": 170}),
}


@dataclass(frozen=True)
class Pretraining:
    """One pretraining arm: its tasks (shard datasets), its objective mix and the family it serves."""

    name: str
    family: str
    tasks: tuple[str, ...]
    objectives: Callable[[], tuple[MixEntry, ...]]
    label: str


PRETRAININGS = (
    Pretraining("jmp", "molecules", JMP_CORPORA, lambda: (MixEntry(JMPSupervised()),), "JMP (4 corpora)"),
    Pretraining("jmp_ani1x", "molecules", ("ani1x",), lambda: (MixEntry(JMPSupervised()),), "JMP (ANI-1x only)"),
    Pretraining("jmp_dens", "molecules", JMP_CORPORA, lambda: (MixEntry(dens()),), "JMP + DeNS"),
    Pretraining("scd", "molecules", JMP_CORPORA, lambda: (MixEntry(SCD()),), "SCD"),
    Pretraining("denoise", "molecules", JMP_CORPORA, lambda: (MixEntry(CoordinateDenoising.zaidi()),),
                "coordinate denoising"),
    Pretraining("derivative_denoise", "bulk", ("bulk_relaxed",), lambda: (MixEntry(DerivativeDenoising(0.1)),),
                "derivative denoising"),
    Pretraining("head_denoise", "bulk", ("bulk_relaxed",), lambda: (MixEntry(CoordinateDenoising.prediction_head()),),
                "prediction-head denoising"),
    Pretraining("efs", "bulk", ("bulk",), lambda: (MixEntry(DerivativeForceField(1.0, 500.0, 500.0)),),
                "E+F+S derivative (1:500:500)"),
    Pretraining("hmask", "water", ("water",), lambda: (MixEntry(HydrogenMasking()),), "H-masking"),
    Pretraining("water_denoise", "water", ("water",), lambda: (MixEntry(CoordinateDenoising.zaidi()),),
                "coordinate denoising"),
)
PRETRAINING = {p.name: p for p in PRETRAININGS}


@dataclass(frozen=True)
class Finetuning:
    """One fine-tuning arm on one downstream set: from a pretraining arm (or scratch), with an optional
    auxiliary (dens_auxiliary: `recipes.finetune.dens_md17()`, DeNS as released for MD17)."""

    name: str
    family: str
    pretraining: str | None
    dens_auxiliary: bool = False


FINETUNINGS = {
    "molecules": (Finetuning("scratch", "molecules", None),
                  Finetuning("scratch_dens", "molecules", None, dens_auxiliary=True),
                  *(Finetuning(p.name, "molecules", p.name) for p in PRETRAININGS if p.family == "molecules")),
    "bulk": (Finetuning("scratch", "bulk", None),
             *(Finetuning(p.name, "bulk", p.name) for p in PRETRAININGS if p.family == "bulk")),
    "water": (Finetuning("scratch", "water", None),
              *(Finetuning(p.name, "water", p.name) for p in PRETRAININGS if p.family == "water")),
}
ARM_LABELS = {"scratch": "scratch", "scratch_dens": "scratch + DeNS auxiliary",
              **{p.name: p.label for p in PRETRAININGS}}


@dataclass(frozen=True)
class Claim:
    """One row: `arm` against `baseline` on `metric` (lower is better); `kind` "better" or "matches_or_better"."""

    paper: str
    claim: str
    family: str
    metric: str
    arm: str
    baseline: str
    paper_gain: float | None = None  # the paper's relative error reduction of arm vs baseline, where it gives one
    kind: str = "better"
    pretraining_metric: bool = False  # read from the pretraining run's validation, not from fine-tuning


FORCE_MAE = "test force MAE (meV/Å)"
CLAIMS = (
    Claim("JMP (003)", "JMP-S vs scratch, rMD17 aspirin force MAE 24.3 -> 6.7 (-72%); +59% on average",
          "molecules", FORCE_MAE, "jmp", "scratch", 0.72),
    Claim("JMP (003)", "multi-domain pretraining beats a single domain (JMP ablations; direction only)",
          "molecules", FORCE_MAE, "jmp", "jmp_ani1x"),
    Claim("DeNS (001)", "DeNS auxiliary in MD17 training, aspirin force MAE 7.2 -> 5.7 (-21%)",
          "molecules", FORCE_MAE, "scratch_dens", "scratch", 0.21),
    Claim("DeNS (001)", "DeNS auxiliary improves the trained tasks: OC20 S2EF force MAE 14.2 -> 13.4 (-6%)",
          "molecules", "oc20 val force MAE (meV/Å)", "jmp_dens", "jmp", 0.056, pretraining_metric=True),
    Claim("DeNS (001)", "DeNS auxiliary improves the trained tasks: OC22 S2EF force MAE 21.58 -> 20.47 (-5%)",
          "molecules", "oc22 val force MAE (meV/Å)", "jmp_dens", "jmp", 0.051, pretraining_metric=True),
    Claim("DeNS (001)", "JMP + DeNS pretraining vs JMP pretraining (direction only; not a paper number)",
          "molecules", FORCE_MAE, "jmp_dens", "jmp"),
    Claim("SCD (000)", "SCD significantly outperforms coordinate denoising (same data, backbone)",
          "molecules", FORCE_MAE, "scd", "denoise"),
    Claim("SCD (000)", "SCD matches or exceeds supervised force-energy pretraining",
          "molecules", FORCE_MAE, "scd", "jmp", 0.0, kind="matches_or_better"),
    Claim("SCD (000)", "SCD pretraining beats training from scratch", "molecules", FORCE_MAE, "scd", "scratch"),
    Claim("Derivative (002)", "derivative denoising beats prediction-head denoising (TorchMD-Net: 23.5% vs 18.9%)",
          "bulk", "test bulk modulus MAE (GPa)", "derivative_denoise", "head_denoise", 0.057),
    Claim("Derivative (002)", "E+F+S (1:500:500) beats derivative denoising (25.1% vs 23.5%)",
          "bulk", "test bulk modulus MAE (GPa)", "efs", "derivative_denoise", 0.021),
    Claim("Derivative (002)", "E+F+S pretraining vs scratch: -25.1% MAE on average (TorchMD-Net)",
          "bulk", "test bulk modulus MAE (GPa)", "efs", "scratch", 0.251),
    Claim("H-masking (004)", "H-masking vs scratch, force RMSE -47% (EGNN, RPBE water)",
          "water", "test force RMSE (meV/Å)", "hmask", "scratch", 0.47),
    Claim("H-masking (004)", "H-masking vs scratch, energy RMSE -53% (EGNN, RPBE water)",
          "water", "test energy RMSE (meV)", "hmask", "scratch", 0.53),
    Claim("H-masking (004)", "H-masking beats denoising pretraining on TIP3P water (force RMSE 241 vs 2442)",
          "water", "test force RMSE (meV/Å)", "hmask", "water_denoise", 0.90),
)
