"""Tasks: one record per pretraining corpus (JMP), with its graph settings, normalisers and loss scales.

A task is plain data. Statistics (linear reference, energy mean/std, force RMS) come from the shard
manifest of its dataset; the defaults below are JMP's published values (CORPORA.md), used until a
manifest provides the real ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class TaskSpec:
    """One task (= one corpus in JMP). Energies in eV, forces eV/Å, cutoff Å."""

    name: str
    cutoff: float = 6.0
    max_neighbors: int = 30
    energy_convention: str = "total"  # "total" | "referenced"; a linear reference is subtracted either way
    linear_reference: Mapping[int, float] = field(default_factory=dict)  # eV per atom of element Z
    energy_mean: float = 0.0  # eV per structure, after the linear reference
    energy_std: float = 1.0  # s_E, eV
    force_std: float = 1.0  # s_F, eV/Å
    energy_weight: float = 1.0  # λ_E
    force_weight: float = 1.0  # λ_F
    stress_weight: float = 0.0  # λ_S

    def __post_init__(self) -> None:
        for name in ("cutoff", "energy_std", "force_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"task {self.name!r}: field {name!r} must be positive, got {getattr(self, name)}")
        if self.energy_convention not in ("total", "referenced"):
            raise ValueError(f"task {self.name!r}: energy_convention must be 'total' or 'referenced'")

    def reference_energy(self, atomic_numbers: np.ndarray) -> float:
        """Σ_atoms linear_reference[Z] in eV (0 for elements without a reference)."""
        return float(sum(self.linear_reference.get(int(z), 0.0) for z in np.asarray(atomic_numbers).reshape(-1)))

    def with_statistics(self, stats: Mapping) -> TaskSpec:
        """A copy with statistics from a manifest's `statistics` block (keys as written by the pipeline)."""
        return replace(
            self,
            linear_reference={int(k): float(v) for k, v in stats["linear_reference"].items()},
            energy_mean=float(stats["energy_mean"]),
            energy_std=float(stats["energy_std"]),
            force_std=float(stats["force_rms"]),
        )


# JMP's pretraining table (CORPORA.md / OBJECTIVES.md §1).
JMP_TASKS: dict[str, TaskSpec] = {
    "oc20": TaskSpec("oc20", 12.0, 30, "referenced", energy_std=24.90, force_std=0.511, force_weight=73.0),
    "oc22": TaskSpec("oc22", 12.0, 30, "total", energy_std=25.23, force_std=0.257, force_weight=80.0),
    "ani1x": TaskSpec("ani1x", 8.0, 30, "total", energy_std=2.87, force_std=2.131, force_weight=15.0),
    "transition1x": TaskSpec("transition1x", 8.0, 30, "total", energy_std=1.79, force_std=0.359, force_weight=14.0),
}
