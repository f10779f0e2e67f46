"""Per-dataset label statistics, accumulated in mergeable sums so each shard's part can be resumed.

Linear reference: least squares of energy on per-element atom counts, E ≈ Σ_Z n_Z·e_Z (no
intercept, minimum-norm solution when elements always co-occur). After subtracting it, the
energy mean/std per structure (eV) and the mean per atom (Σ residual / Σ atoms, eV/atom: the
extensive reference); force RMS over all force components (eV/Å); how many structures carry each
label (a label-free corpus has zeros, and its std / RMS are 0: nothing to normalise by); a
histogram of atoms per structure. Keys match `TaskSpec.with_statistics`.

The one fitter of the platform: preprocessing adds what it writes (`add` per structure, `add_batch`
per StructureBatch), fine-tuning the Arrow rows of its training subset (`add_table`, columnar); all
finalize the same way.
`finalize(reference="mean_per_atom")` fits one shared per-atom value instead (E/N of an intensive
property stored as N·p: every element gets the train mean per atom).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from atomforge.schema import MAX_ATOMIC_NUMBER, Structure

_DIM = MAX_ATOMIC_NUMBER + 1
REFERENCE_FITS = ("least_squares", "mean_per_atom")
_COUNTS = ("sum_y", "sum_y2", "num_energies", "sum_f2", "num_force_components", "num_with_forces", "num_with_stress")


class StatsAccumulator:
    """Sums for one dataset: counts XᵀX (per element pair), Xᵀy, Σy, Σy², Σx, Σf², sizes."""

    def __init__(self) -> None:
        self.xtx = np.zeros((_DIM, _DIM))
        self.xty = np.zeros(_DIM)
        self.sum_x = np.zeros(_DIM)
        self.sum_y = 0.0
        self.sum_y2 = 0.0
        self.num_energies = 0
        self.sum_f2 = 0.0
        self.num_force_components = 0
        self.num_with_forces = 0
        self.num_with_stress = 0
        self.num_atoms_counts: Counter[int] = Counter()

    def add(self, s: Structure) -> None:
        self.num_atoms_counts[s.num_atoms] += 1
        if s.forces is not None:
            forces = s.forces.astype(np.float32).astype(np.float64)  # as stored in the shards
            self.sum_f2 += float(np.square(forces).sum())
            self.num_force_components += forces.size
            self.num_with_forces += 1
        if s.stress is not None:
            self.num_with_stress += 1
        if s.energy is None:
            return
        x = np.bincount(s.atomic_numbers, minlength=_DIM).astype(np.float64)
        self.xtx += np.outer(x, x)
        self.xty += x * s.energy
        self.sum_x += x
        self.sum_y += s.energy
        self.sum_y2 += s.energy * s.energy
        self.num_energies += 1

    def add_batch(self, batch) -> None:
        """`add` for every structure of a `StructureBatch`, as whole-array sums (counts are exact)."""
        sizes = batch.num_atoms
        self.num_atoms_counts.update(dict(zip(*(v.tolist() for v in np.unique(sizes, return_counts=True)))))
        atom_has_forces = batch.has_forces[batch.frame_of_atom]
        forces = batch.forces[atom_has_forces].astype(np.float32).astype(np.float64)  # as stored in the shards
        self.sum_f2 += float(np.square(forces).sum())
        self.num_force_components += forces.size
        self.num_with_forces += int(batch.has_forces.sum())
        self.num_with_stress += int(batch.has_stress.sum())
        labelled = np.flatnonzero(batch.has_energy)
        if not len(labelled):
            return
        frame = np.repeat(np.arange(len(batch)), sizes)
        keep = batch.has_energy[frame]
        rows = np.searchsorted(labelled, frame[keep])
        x = np.zeros((len(labelled), _DIM))
        np.add.at(x, (rows, batch.atomic_numbers[keep]), 1.0)
        energy = batch.energy[labelled]
        self.xtx += x.T @ x
        self.xty += x.T @ energy
        self.sum_x += x.sum(axis=0)
        self.sum_y += float(energy.sum())
        self.sum_y2 += float(energy @ energy)
        self.num_energies += len(labelled)

    def add_table(self, table: pa.Table) -> StatsAccumulator:
        """Add shard rows (Arrow columns num_atoms, atomic_numbers, energy, forces, stress) at once.

        The same sums as `add` on each row's structure, from the columns' value buffers."""
        num_atoms = table.column("num_atoms").to_numpy().astype(np.int64)
        z = _flat(table, "atomic_numbers").astype(np.int64)
        row = np.repeat(np.arange(len(num_atoms)), num_atoms)
        counts = np.zeros((len(num_atoms), _DIM))
        np.add.at(counts, (row, z), 1.0)
        energy = table.column("energy").to_numpy(zero_copy_only=False).astype(np.float64)
        labelled = ~np.isnan(energy)
        x, y = counts[labelled], energy[labelled]
        self.xtx += x.T @ x
        self.xty += x.T @ y
        self.sum_x += x.sum(axis=0)
        self.sum_y += float(y.sum())
        self.sum_y2 += float((y * y).sum())
        self.num_energies += int(labelled.sum())
        forces = table.column("forces")
        has_forces = ~np.asarray(forces.is_null().to_numpy(zero_copy_only=False))
        values = _flat(table, "forces").astype(np.float64)  # the float32 values as stored
        self.sum_f2 += float(np.square(values).sum())
        self.num_force_components += int(values.size)
        self.num_with_forces += int(has_forces.sum())
        self.num_with_stress += int((~np.asarray(table.column("stress").is_null().to_numpy(zero_copy_only=False))).sum())
        self.num_atoms_counts.update(Counter(num_atoms.tolist()))
        return self

    def merge(self, other: StatsAccumulator) -> StatsAccumulator:
        for name in ("xtx", "xty", "sum_x"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.num_atoms_counts.update(other.num_atoms_counts)
        return self

    def to_json(self) -> dict:
        """Compact JSON (only elements present), exact float round trip."""
        z = np.flatnonzero(self.sum_x).tolist()
        return {
            "elements": z,
            "xtx": self.xtx[np.ix_(z, z)].tolist(),
            "xty": self.xty[z].tolist(),
            "sum_x": self.sum_x[z].tolist(),
            "sum_y": self.sum_y, "sum_y2": self.sum_y2, "num_energies": self.num_energies,
            "sum_f2": self.sum_f2, "num_force_components": self.num_force_components,
            "num_with_forces": self.num_with_forces, "num_with_stress": self.num_with_stress,
            "num_atoms_counts": {str(k): v for k, v in sorted(self.num_atoms_counts.items())},
        }

    @classmethod
    def from_json(cls, data: dict) -> StatsAccumulator:
        acc = cls()
        z = data["elements"]
        if z:
            acc.xtx[np.ix_(z, z)] = np.asarray(data["xtx"])
            acc.xty[z] = data["xty"]
            acc.sum_x[z] = data["sum_x"]
        for name in _COUNTS:
            setattr(acc, name, data.get(name, 0))  # parts written before a count existed: 0
        acc.num_atoms_counts = Counter({int(k): v for k, v in data["num_atoms_counts"].items()})
        return acc

    def finalize(self, reference: str = "least_squares", given: Mapping[int, float] | None = None) -> dict:
        """The manifest's statistics block for this dataset; `reference`: how e_Z is fitted (REFERENCE_FITS).

        given: a fixed per-element reference (eV per atom, e.g. a pretrained model's) instead of a fit:
        the energy mean and spread are those of the residual around it; every element present needs a value."""
        if reference not in REFERENCE_FITS:
            raise ValueError(f"reference fit must be one of {REFERENCE_FITS}, got {reference!r}")
        fit, z = reference, np.flatnonzero(self.sum_x)
        reference = np.zeros(0)
        mean = std = mean_per_atom = 0.0
        if given is not None:
            missing = [int(e) for e in z if int(e) not in given]
            if missing:
                raise ValueError(f"the given linear reference has no value for elements {missing} of the data")
        if self.num_energies:
            if given is not None:
                reference = np.array([float(given[int(e)]) for e in z])
            elif fit == "mean_per_atom":
                reference = np.full(len(z), self.sum_y / self.sum_x.sum())
            else:
                reference = np.linalg.lstsq(self.xtx[np.ix_(z, z)], self.xty[z], rcond=None)[0]
            n = self.num_energies
            # Σr = Σy - wᵀΣx ; Σr² = Σy² - 2wᵀXᵀy + wᵀXᵀXw  (r = y - Xw)
            sum_r = self.sum_y - reference @ self.sum_x[z]
            sum_r2 = self.sum_y2 - 2 * reference @ self.xty[z] + reference @ self.xtx[np.ix_(z, z)] @ reference
            mean = sum_r / n
            std = float(np.sqrt(max(sum_r2 / n - mean * mean, 0.0)))
            mean_per_atom = sum_r / self.sum_x.sum()
        sizes = sorted(self.num_atoms_counts)
        fitted = {str(int(k)): float(v) for k, v in zip(z, reference)}
        if given is not None and self.num_energies:
            fitted = {str(int(k)): float(v) for k, v in sorted(given.items())}  # kept whole, elements beyond the data too
        return {
            "linear_reference": fitted,
            "energy_mean": float(mean),
            "energy_mean_per_atom": float(mean_per_atom),
            "energy_std": std,
            "force_rms": float(np.sqrt(self.sum_f2 / self.num_force_components)) if self.num_force_components else 0.0,
            "num_structures": int(sum(self.num_atoms_counts.values())),
            "num_with_energy": int(self.num_energies),
            "num_with_forces": int(self.num_with_forces),
            "num_with_stress": int(self.num_with_stress),
            "num_atoms_histogram": {"num_atoms": sizes, "count": [self.num_atoms_counts[k] for k in sizes]},
        }


def merge_all(parts: list[dict[str, dict]]) -> dict[str, StatsAccumulator]:
    """dataset -> accumulator, merged in the given order (deterministic float sums)."""
    merged: dict[str, StatsAccumulator] = {}
    for part in parts:
        for dataset, data in part.items():
            merged.setdefault(dataset, StatsAccumulator()).merge(StatsAccumulator.from_json(data))
    return merged


def _flat(table: pa.Table, name: str) -> np.ndarray:
    """The concatenated values of a list column (null lists contribute nothing)."""
    column = table.column(name)
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return column.flatten().to_numpy(zero_copy_only=False)
