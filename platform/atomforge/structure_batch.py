"""Many structures as concatenated columns: the pipeline's hot-path record, with no per-structure objects.

A `StructureBatch` of F structures and A atoms in all holds every `Structure` field as one array
(per-atom fields concatenated in structure order, `atom_offsets` (F + 1,) marking where each
structure starts) and per-structure scalars as (F,) arrays. An optional label is a value array
plus a `has_<label>` (F,) mask, so a missing label (null in the shards) is never confused with a
NaN label (a corrupt record). Units as in `schema`: Å, eV, eV/Å, eV/Å³.

Readers that parse columns directly (OC20 extxyz) build batches without ever making a
`Structure`; `from_structures` and `structure(i)` convert for everything else and for users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from atomforge.schema import FRAME_KINDS, MAX_ATOMIC_NUMBER, Structure

ATOM_FIELDS = ("atomic_numbers", "positions", "forces", "fixed", "tags")
FRAME_FIELDS = ("system_id", "dataset", "group_id", "frame_kind", "source", "cell", "has_cell", "pbc",
                "energy", "has_energy", "total_energy", "has_total_energy", "has_forces", "stress",
                "has_stress", "has_fixed", "has_tags")


@dataclass
class StructureBatch:
    """F structures as columns. Arrays (A = total atoms):

    atom_offsets (F + 1,) int64; atomic_numbers (A,) int64; positions (A, 3) float64 Å;
    cell (F, 3, 3) float64 Å (zeros where `has_cell` is False); pbc (F, 3) bool;
    energy, total_energy (F,) float64 eV; forces (A, 3) float64 eV/Å; stress (F, 3, 3) eV/Å³;
    fixed (A,) bool; tags (A,) int64; has_* (F,) bool; strings system_id, dataset, group_id,
    frame_kind, source (F,) object arrays (`source` names the file and record, for quarantine).
    """

    system_id: np.ndarray
    dataset: np.ndarray
    group_id: np.ndarray
    frame_kind: np.ndarray
    source: np.ndarray
    atom_offsets: np.ndarray
    atomic_numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    has_cell: np.ndarray
    pbc: np.ndarray
    energy: np.ndarray
    has_energy: np.ndarray
    total_energy: np.ndarray
    has_total_energy: np.ndarray
    forces: np.ndarray
    has_forces: np.ndarray
    stress: np.ndarray
    has_stress: np.ndarray
    fixed: np.ndarray
    has_fixed: np.ndarray
    tags: np.ndarray
    has_tags: np.ndarray

    def __len__(self) -> int:
        return len(self.atom_offsets) - 1

    @property
    def num_atoms(self) -> np.ndarray:
        """(F,) int64 atoms per structure."""
        return np.diff(self.atom_offsets)

    @property
    def frame_of_atom(self) -> np.ndarray:
        """(A,) int64: which structure each atom belongs to."""
        return np.repeat(np.arange(len(self)), self.num_atoms)

    def take(self, index: Sequence[int] | np.ndarray) -> StructureBatch:
        """The structures at `index` (in that order) as a new batch."""
        index = np.asarray(index, dtype=np.int64)
        counts = self.num_atoms[index]
        starts = self.atom_offsets[:-1][index]
        atoms = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
        values = {name: getattr(self, name)[index] for name in FRAME_FIELDS}
        values.update({name: getattr(self, name)[atoms] for name in ATOM_FIELDS})
        return StructureBatch(atom_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), **values)

    def structure(self, i: int) -> Structure:
        """Structure `i` as a validated `Structure` (runs the full `schema.validate`)."""
        a, b = self.atom_offsets[i], self.atom_offsets[i + 1]
        return Structure(
            system_id=str(self.system_id[i]), atomic_numbers=self.atomic_numbers[a:b],
            positions=self.positions[a:b], cell=self.cell[i] if self.has_cell[i] else None, pbc=self.pbc[i],
            energy=float(self.energy[i]) if self.has_energy[i] else None,
            total_energy=float(self.total_energy[i]) if self.has_total_energy[i] else None,
            forces=self.forces[a:b] if self.has_forces[i] else None,
            stress=self.stress[i] if self.has_stress[i] else None,
            fixed=self.fixed[a:b] if self.has_fixed[i] else None,
            tags=self.tags[a:b] if self.has_tags[i] else None,
            dataset=str(self.dataset[i]), group_id=str(self.group_id[i]), frame_kind=str(self.frame_kind[i]),
        )

    @classmethod
    def from_structures(cls, structures: Sequence[Structure], sources: Sequence[str] | None = None) -> StructureBatch:
        """A batch holding `structures` (labels that are None become has_* False)."""
        counts = np.array([s.num_atoms for s in structures], dtype=np.int64)
        num_frames, num_atoms = len(structures), int(counts.sum())

        def atoms(name: str, shape: tuple, dtype) -> tuple[np.ndarray, np.ndarray]:
            present = np.array([getattr(s, name) is not None for s in structures], dtype=bool)
            parts = [np.zeros((s.num_atoms, *shape), dtype) if getattr(s, name) is None
                     else np.asarray(getattr(s, name), dtype).reshape(s.num_atoms, *shape) for s in structures]
            return (np.concatenate(parts) if parts else np.zeros((0, *shape), dtype)), present

        def frames(name: str, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
            present = np.array([getattr(s, name) is not None for s in structures], dtype=bool)
            values = np.zeros((num_frames, *shape))
            for i, s in enumerate(structures):
                if present[i]:
                    values[i] = getattr(s, name)
            return values, present

        forces, has_forces = atoms("forces", (3,), np.float64)
        fixed, has_fixed = atoms("fixed", (), bool)
        tags, has_tags = atoms("tags", (), np.int64)
        cell, has_cell = frames("cell", (3, 3))
        energy, has_energy = frames("energy", ())
        total_energy, has_total_energy = frames("total_energy", ())
        stress, has_stress = frames("stress", (3, 3))
        strings = {name: np.array([getattr(s, name) for s in structures], dtype=object)
                   for name in ("system_id", "dataset", "group_id", "frame_kind")}
        return cls(
            **strings, source=np.array(sources if sources is not None else strings["system_id"], dtype=object),
            atom_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            atomic_numbers=(np.concatenate([s.atomic_numbers for s in structures]) if num_frames
                            else np.zeros(0, np.int64)).astype(np.int64),
            positions=(np.concatenate([s.positions for s in structures]) if num_frames
                       else np.zeros((0, 3))).reshape(num_atoms, 3),
            cell=cell, has_cell=has_cell, pbc=np.array([s.pbc for s in structures], dtype=bool).reshape(-1, 3),
            energy=energy, has_energy=has_energy, total_energy=total_energy, has_total_energy=has_total_energy,
            forces=forces, has_forces=has_forces, stress=stress, has_stress=has_stress,
            fixed=fixed, has_fixed=has_fixed, tags=tags, has_tags=has_tags,
        )


def concatenate(batches: Sequence[StructureBatch]) -> StructureBatch:
    """One batch holding every structure of `batches`, in order."""
    if len(batches) == 1:
        return batches[0]
    if not batches:
        return StructureBatch.from_structures([])
    counts = np.concatenate([b.num_atoms for b in batches])
    values = {f.name: np.concatenate([getattr(b, f.name) for b in batches])
              for f in fields(StructureBatch) if f.name != "atom_offsets"}
    return StructureBatch(atom_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), **values)


def per_structure_any(flags: np.ndarray, atom_offsets: np.ndarray) -> np.ndarray:
    """(F,) bool: whether any of each structure's atoms has a True `flags` (A,) entry (empty -> False)."""
    cumulative = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    return cumulative[atom_offsets[1:]] > cumulative[atom_offsets[:-1]]


class Verdicts:
    """The first problem found per structure: reason and message (None = none yet)."""

    def __init__(self, batch: StructureBatch) -> None:
        self.batch = batch
        self.reason: list[str | None] = [None] * len(batch)
        self.detail: list[str | None] = [None] * len(batch)

    def flag(self, mask: np.ndarray, reason: str, why) -> None:
        """Give `reason` to the structures in (F,) `mask` that have none; `why(i)` is the message tail."""
        for i in np.flatnonzero(mask):
            if self.reason[i] is None:
                sid, source = self.batch.system_id[i], self.batch.source[i]
                self.reason[i], self.detail[i] = reason, f"{source}: {sid}: {why(i)}"

    @property
    def ok(self) -> np.ndarray:
        return np.array([r is None for r in self.reason], dtype=bool)

    def problems(self) -> list[tuple[int, str, str]]:
        """(structure index, reason, message) of every flagged structure, in batch order."""
        return [(i, self.reason[i], self.detail[i]) for i in range(len(self.batch)) if self.reason[i] is not None]


def _any_per_frame(batch: StructureBatch, per_atom: np.ndarray) -> np.ndarray:
    return per_structure_any(per_atom, batch.atom_offsets)


def check_labels_and_fields(batch: StructureBatch, verdicts: Verdicts) -> None:
    """NaN labels ("nan_label"), then `schema.validate`'s field rules ("validation"), in its order."""
    b = batch
    nan = {"energy": b.has_energy & ~np.isfinite(b.energy),
           "total_energy": b.has_total_energy & ~np.isfinite(b.total_energy),
           "forces": b.has_forces & _any_per_frame(b, ~np.isfinite(b.forces).all(axis=1)),
           "stress": b.has_stress & ~np.isfinite(b.stress).reshape(len(b), -1).all(axis=1)}
    for name, mask in nan.items():
        verdicts.flag(mask, "nan_label", lambda i, name=name: f"field '{name}' contains NaN or inf")
    n = b.num_atoms
    verdicts.flag(np.array([not s for s in b.system_id], dtype=bool), "validation",
                  lambda i: "field 'system_id' must be a non-empty string")
    verdicts.flag(n == 0, "validation", lambda i: "field 'atomic_numbers' is empty")
    verdicts.flag(_any_per_frame(b, ~np.isfinite(b.positions).all(axis=1)), "validation",
                  lambda i: "field 'positions' contains NaN or inf")
    bad_z = (b.atomic_numbers < 1) | (b.atomic_numbers > MAX_ATOMIC_NUMBER)

    def z_values(i):
        z = b.atomic_numbers[b.atom_offsets[i]:b.atom_offsets[i + 1]]
        return f"field 'atomic_numbers' has values outside 1..118: {sorted(set(z[(z < 1) | (z > 118)].tolist()))}"

    verdicts.flag(_any_per_frame(b, bad_z), "validation", z_values)
    verdicts.flag(np.array([k not in FRAME_KINDS for k in b.frame_kind], dtype=bool), "validation",
                  lambda i: f"field 'frame_kind' is {b.frame_kind[i]!r}, expected one of {FRAME_KINDS}")
    periodic = b.pbc.any(axis=1)
    verdicts.flag(periodic & ~b.has_cell, "validation", lambda i: "field 'cell' is missing but pbc is set")
    cell_finite = np.isfinite(b.cell).reshape(len(b), -1).all(axis=1)
    verdicts.flag(b.has_cell & ~cell_finite, "validation", lambda i: "field 'cell' contains NaN or inf")
    verdicts.flag(periodic & b.has_cell & cell_finite & ~_periodic_rows_span(b), "validation",
                  lambda i: "field 'cell' is singular along periodic directions")


def _periodic_rows_span(b: StructureBatch) -> np.ndarray:
    """(F,) bool: the periodic cell vectors are linearly independent (rank test of `schema.validate`)."""
    ok = np.ones(len(b), dtype=bool)
    cells = np.where(np.isfinite(b.cell), b.cell, 0.0)
    full = b.pbc.all(axis=1)
    if full.any():  # one batched SVD for the common all-periodic case, the tolerance of matrix_rank
        ok[full] = np.linalg.svd(cells[full], compute_uv=False).min(axis=1) > 1e-6
    for i in np.flatnonzero(b.pbc.any(axis=1) & ~full):
        rows = cells[i][b.pbc[i]]
        ok[i] = np.linalg.matrix_rank(rows, tol=1e-6) == len(rows)
    return ok
