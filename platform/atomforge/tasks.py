"""Tasks: one record per pretraining corpus (JMP), with its graph settings, normalisers and loss scales.

A task is plain data. Statistics (linear reference, energy mean/std, force RMS) come from the shard
manifest of its dataset; until a manifest provides the real ones, a corpus's task carries JMP's
published values (its record in `atomforge.datasets`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

MEAN_REFERENCES = ("atom", "structure")
LABELS = ("energy", "forces", "stress")


@dataclass(frozen=True)
class TaskSpec:
    """One task (= one corpus in JMP). Energies in eV, forces eV/Å, cutoff Å.

    cutoff / max_neighbors: the graph the task's batches are built with (the model's cutoff must
    equal it, see `training.config.check_cutoffs`). mean_reference: how μ_E enters the energy,
    "atom" (E = ... + n_atoms·μ_E, μ_E in eV/atom: extensive, two far-apart copies get twice the
    energy of one; our default) or "structure" (E = ... + μ_E, eV per structure: JMP's
    normalisation, not extensive). labels: the label fields the dataset has, from its manifest
    (None = not known, nothing checked). dens_md_frames: DeNS may corrupt this dataset's MD frames
    (False as the OC20/OC22 code, True as the MD17 code).
    """

    name: str
    cutoff: float = 6.0
    max_neighbors: int = 30
    energy_convention: str = "total"  # "total" | "referenced"; a linear reference is subtracted either way
    linear_reference: Mapping[int, float] = field(default_factory=dict)  # eV per atom of element Z
    energy_mean: float = 0.0  # μ_E after the linear reference: eV per atom or per structure (mean_reference)
    energy_std: float = 1.0  # s_E, eV
    force_std: float = 1.0  # s_F, eV/Å
    energy_weight: float = 1.0  # λ_E
    force_weight: float = 1.0  # λ_F
    stress_weight: float = 0.0  # λ_S
    mean_reference: str = "atom"
    labels: tuple[str, ...] | None = None
    dens_md_frames: bool = False

    def __post_init__(self) -> None:
        for name in ("cutoff", "energy_std", "force_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"task {self.name!r}: field {name!r} must be positive, got {getattr(self, name)}")
        if self.energy_convention not in ("total", "referenced"):
            raise ValueError(f"task {self.name!r}: energy_convention must be 'total' or 'referenced'")
        if self.mean_reference not in MEAN_REFERENCES:
            raise ValueError(f"task {self.name!r}: mean_reference must be one of {MEAN_REFERENCES}, got {self.mean_reference!r}")
        if self.labels is not None and not set(self.labels) <= set(LABELS):
            raise ValueError(f"task {self.name!r}: labels must be among {LABELS}, got {self.labels}")

    def reference_energy(self, atomic_numbers: np.ndarray) -> float:
        """Σ_atoms linear_reference[Z] in eV (0 for elements without a reference)."""
        return float(sum(self.linear_reference.get(int(z), 0.0) for z in np.asarray(atomic_numbers).reshape(-1)))

    def with_statistics(self, stats: Mapping) -> TaskSpec:
        """A copy with statistics from a manifest's `statistics` block (keys as written by the pipeline).

        A label-free dataset (no energies / forces: SCD, denoising, H-masking corpora) has no
        spread to normalise by: its energy_std / force_std keep this spec's values, and `labels`
        records what it lacks, so a supervised objective on it is refused before training.
        """
        labels = labels_in(stats)
        has_energy, has_forces = "energy" in labels, "forces" in labels
        energy_std, force_rms = float(stats.get("energy_std", 0.0)), float(stats.get("force_rms", 0.0))
        return replace(
            self,
            linear_reference={int(k): float(v) for k, v in stats.get("linear_reference", {}).items()} if has_energy else {},
            energy_mean=_mean(stats, self.mean_reference, self.name) if has_energy else 0.0,
            energy_std=energy_std if has_energy and energy_std > 0 else self.energy_std,
            force_std=force_rms if has_forces and force_rms > 0 else self.force_std,
            labels=labels,
        )


def labels_in(stats: Mapping) -> tuple[str, ...]:
    """The label fields a manifest's statistics block says its dataset has.

    Counts (`num_with_energy`, `num_with_forces`, `num_with_stress`) where written; older manifests
    without them: energies and forces assumed present when their statistics are nonzero."""
    energy = stats.get("num_with_energy", 1 if stats.get("energy_std", 0) else 0) > 0
    forces = stats.get("num_with_forces", 1 if stats.get("force_rms", 0) else 0) > 0
    stress = stats.get("num_with_stress", 0) > 0
    return tuple(name for name, present in zip(LABELS, (energy, forces, stress)) if present)


def _mean(stats: Mapping, mean_reference: str, task: str) -> float:
    if mean_reference == "structure":
        return float(stats["energy_mean"])
    if "energy_mean_per_atom" not in stats:
        raise ValueError(f"task {task!r}: the manifest's statistics have no 'energy_mean_per_atom' (written by "
                         "atomforge >= 0.1 pipelines); re-run preprocessing or set mean_reference='structure'")
    return float(stats["energy_mean_per_atom"])

