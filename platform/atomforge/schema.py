"""The structure record and the shard contract: every field's name, dtype, shape and unit, in one place.

A `Structure` is one atomistic configuration with its labels, in platform units
(eV, Å, eV/Å, eV/Å³). Readers build them; the pipeline turns them into Arrow rows
(one row per structure) with a neighbor graph; loaders turn rows back into tensors.

Arrow encoding: per-atom and per-edge arrays are flattened into `list<...>` columns
(row-major), so that `positions` of a 5-atom structure is a list of 15 float32.
`num_atoms` and `num_edges` are top-level int columns so samplers never open the data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = "1.0"
MIN_DISTANCE = 0.1  # Å: two atoms closer than this are a corrupt record, not physics
MAX_ATOMIC_NUMBER = 118
FRAME_KINDS = ("relax", "md", "neb", "equilibrium", "unknown")


@dataclass(frozen=True)
class FieldSpec:
    """One shard column: Arrow type, per-structure shape and unit."""

    name: str
    arrow_type: pa.DataType
    shape: str
    unit: str
    nullable: bool
    doc: str


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("system_id", pa.string(), "()", "-", False, "stable unique id: corpus + the corpus's own ids"),
    FieldSpec("dataset", pa.string(), "()", "-", False, "task name (oc20, ani1x, ...)"),
    FieldSpec("group_id", pa.string(), "()", "-", False, "split group (OC20 system, ANI-1x formula, T1x reaction)"),
    FieldSpec("frame_kind", pa.string(), "()", "-", False, "relax | md | neb | equilibrium | unknown"),
    FieldSpec("split", pa.string(), "()", "-", True, "train | val | test, assigned by the pipeline"),
    FieldSpec("num_atoms", pa.int32(), "()", "-", False, "N"),
    FieldSpec("num_edges", pa.int32(), "()", "-", False, "E, 0 when no graph was built"),
    FieldSpec("atomic_numbers", pa.list_(pa.uint8()), "(N,)", "-", False, "Z in 1..118"),
    FieldSpec("positions", pa.list_(pa.float32()), "(N, 3)", "Å", False, "Cartesian positions"),
    FieldSpec("cell", pa.list_(pa.float64(), 9), "(3, 3)", "Å", True, "lattice vectors as rows; null = no cell"),
    FieldSpec("pbc", pa.list_(pa.bool_(), 3), "(3,)", "-", False, "periodic along each cell vector"),
    FieldSpec("energy", pa.float64(), "()", "eV", True, "the dataset's target energy (convention in manifest)"),
    FieldSpec("total_energy", pa.float64(), "()", "eV", True, "raw total energy where `energy` is referenced"),
    FieldSpec("forces", pa.list_(pa.float32()), "(N, 3)", "eV/Å", True, "forces (not gradients)"),
    FieldSpec("stress", pa.list_(pa.float64(), 9), "(3, 3)", "eV/Å³", True, "stress, ASE sign convention"),
    FieldSpec("fixed", pa.list_(pa.bool_()), "(N,)", "-", True, "True = atom held fixed in the source calculation"),
    FieldSpec("tags", pa.list_(pa.int8()), "(N,)", "-", True, "OC20: 0 sub-surface, 1 surface, 2 adsorbate"),
    FieldSpec("edge_src", pa.list_(pa.int32()), "(E,)", "-", True, "sending atom of each neighbor pair"),
    FieldSpec("edge_dst", pa.list_(pa.int32()), "(E,)", "-", True, "receiving atom; edges grouped by dst, by distance"),
    FieldSpec("edge_shift", pa.list_(pa.int8()), "(E, 3)", "cells", True, "integer image shift of src"),
)

ARROW_SCHEMA = pa.schema([pa.field(f.name, f.arrow_type, nullable=f.nullable) for f in FIELDS])
FIELD_NAMES = tuple(f.name for f in FIELDS)


@dataclass
class Structure:
    """One structure with optional labels, validated at construction.

    Arrays (N atoms):
        atomic_numbers (N,) int, positions (N, 3) Å, cell (3, 3) Å or None, pbc (3,) bool,
        energy eV (float64) or None, forces (N, 3) eV/Å or None, stress (3, 3) eV/Å³ or None,
        fixed (N,) bool or None, tags (N,) int or None.
    `energy` follows the dataset's convention (total or referenced, recorded in the manifest);
    `total_energy` keeps the raw total where `energy` is referenced (OC20).
    """

    system_id: str
    atomic_numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray | None = None
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    fixed: np.ndarray | None = None
    tags: np.ndarray | None = None
    total_energy: float | None = None
    dataset: str = "unknown"
    group_id: str = ""
    frame_kind: str = "unknown"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.atomic_numbers = np.asarray(self.atomic_numbers, dtype=np.int64).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.pbc = np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy()
        if self.cell is not None:
            self.cell = np.asarray(self.cell, dtype=np.float64).reshape(3, 3)
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64).reshape(-1, 3)
        if self.stress is not None:
            self.stress = _stress_matrix(np.asarray(self.stress, dtype=np.float64), self.system_id)
        if self.fixed is not None:
            self.fixed = np.asarray(self.fixed, dtype=bool).reshape(-1)
        if self.tags is not None:
            self.tags = np.asarray(self.tags, dtype=np.int64).reshape(-1)
        if self.energy is not None:
            self.energy = float(self.energy)
        if self.total_energy is not None:
            self.total_energy = float(self.total_energy)
        if not self.group_id:
            self.group_id = self.system_id
        validate(self)

    @property
    def num_atoms(self) -> int:
        return int(self.atomic_numbers.shape[0])

    def replace(self, **changes: Any) -> Structure:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _stress_matrix(stress: np.ndarray, system_id: str) -> np.ndarray:
    if stress.size == 9:
        return stress.reshape(3, 3)
    if stress.size == 6:  # Voigt order xx yy zz yz xz xy, as ASE writes it
        xx, yy, zz, yz, xz, xy = stress.reshape(6)
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise ValueError(f"{system_id}: field 'stress' has {stress.size} values, expected 6 (Voigt) or 9")


def validate(s: Structure) -> None:
    """Raise ValueError naming the system id and the field for any inconsistent or unphysical record."""
    sid = s.system_id
    n = s.atomic_numbers.shape[0]

    def fail(name: str, why: str) -> None:
        raise ValueError(f"{sid}: field '{name}' {why}")

    if not isinstance(sid, str) or not sid:
        raise ValueError(f"field 'system_id' must be a non-empty string, got {sid!r}")
    if n == 0:
        fail("atomic_numbers", "is empty")
    if s.positions.shape != (n, 3):
        fail("positions", f"has shape {s.positions.shape}, expected ({n}, 3) to match atomic_numbers")
    if not np.isfinite(s.positions).all():
        fail("positions", "contains NaN or inf")
    bad_z = (s.atomic_numbers < 1) | (s.atomic_numbers > MAX_ATOMIC_NUMBER)
    if bad_z.any():
        fail("atomic_numbers", f"has values outside 1..118: {sorted(set(s.atomic_numbers[bad_z].tolist()))}")
    if s.frame_kind not in FRAME_KINDS:
        fail("frame_kind", f"is {s.frame_kind!r}, expected one of {FRAME_KINDS}")
    if s.pbc.any():
        if s.cell is None:
            fail("cell", "is missing but pbc is set")
        if not np.isfinite(s.cell).all():
            fail("cell", "contains NaN or inf")
        # Only the periodic vectors must span a lattice: a slab or wire may leave the others zero.
        periodic_rows = s.cell[s.pbc]
        if np.linalg.matrix_rank(periodic_rows, tol=1e-6) < len(periodic_rows):
            fail("cell", "is singular along periodic directions")
    elif s.cell is not None and not np.isfinite(s.cell).all():
        fail("cell", "contains NaN or inf")
    if s.energy is not None and not np.isfinite(s.energy):
        fail("energy", "is NaN or inf")
    if s.total_energy is not None and not np.isfinite(s.total_energy):
        fail("total_energy", "is NaN or inf")
    for name in ("forces",):
        value = getattr(s, name)
        if value is not None:
            if value.shape != (n, 3):
                fail(name, f"has shape {value.shape}, expected ({n}, 3)")
            if not np.isfinite(value).all():
                fail(name, "contains NaN or inf")
    if s.stress is not None and not np.isfinite(s.stress).all():
        fail("stress", "contains NaN or inf")
    for name in ("fixed", "tags"):
        value = getattr(s, name)
        if value is not None and value.shape != (n,):
            fail(name, f"has shape {value.shape}, expected ({n},)")
    _check_min_distance(s, fail)


def _check_min_distance(s: Structure, fail) -> None:
    from atomforge.graph import closest_pair  # graph depends on schema, not the reverse at import time

    if s.num_atoms < 2 and not s.pbc.any():
        return
    pair = closest_pair(s.positions, s.cell, s.pbc, MIN_DISTANCE)
    if pair is not None:
        i, j, d = pair
        fail("positions", f"has atoms {i} and {j} only {d:.4f} Å apart (< {MIN_DISTANCE} Å)")


# ---------------------------------------------------------------- ase.Atoms
def from_ase(atoms, system_id: str, **meta: Any) -> Structure:
    """Structure from an `ase.Atoms`; labels come from its calculator or info/arrays when present."""
    from ase.constraints import FixAtoms

    energy = forces = stress = None
    calc = atoms.calc
    if calc is not None:
        results = calc.results
        energy = results.get("energy")
        forces = results.get("forces")
        stress = results.get("stress")
    energy = meta.pop("energy", energy if energy is not None else atoms.info.get("energy"))
    forces = meta.pop("forces", forces if forces is not None else atoms.arrays.get("forces"))
    stress = meta.pop("stress", stress if stress is not None else atoms.info.get("stress"))
    fixed = np.zeros(len(atoms), dtype=bool)
    has_fixed = False
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            fixed[constraint.get_indices()] = True
            has_fixed = True
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    has_cell = bool(pbc.any() or np.abs(cell).sum() > 0)
    tags = atoms.get_tags() if "tags" in atoms.arrays else None
    return Structure(
        system_id=system_id,
        atomic_numbers=atoms.numbers,
        positions=atoms.positions,
        cell=cell if has_cell else None,
        pbc=pbc,
        energy=energy,
        forces=forces,
        stress=stress,
        fixed=meta.pop("fixed", fixed if has_fixed else None),
        tags=meta.pop("tags", tags),
        **meta,
    )


def to_ase(s: Structure):
    """`ase.Atoms` with a SinglePointCalculator carrying the labels, FixAtoms for fixed atoms."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixAtoms

    atoms = Atoms(
        numbers=s.atomic_numbers,
        positions=s.positions,
        cell=s.cell if s.cell is not None else np.zeros((3, 3)),
        pbc=s.pbc,
    )
    if s.tags is not None:
        atoms.set_tags(s.tags)
    if s.fixed is not None and s.fixed.any():
        atoms.set_constraint(FixAtoms(indices=np.flatnonzero(s.fixed)))
    results = {}
    if s.energy is not None:
        results["energy"] = s.energy
    if s.forces is not None:
        results["forces"] = s.forces
    if s.stress is not None:
        results["stress"] = s.stress
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info.update(system_id=s.system_id, dataset=s.dataset, group_id=s.group_id, frame_kind=s.frame_kind)
    if s.total_energy is not None:
        atoms.info["total_energy"] = s.total_energy
    return atoms


# ---------------------------------------------------------------- Arrow rows
def to_row(s: Structure, graph=None, split: str | None = None) -> dict[str, Any]:
    """One Arrow row (a dict matching ARROW_SCHEMA). `graph` is an optional `NeighborGraph`."""
    row: dict[str, Any] = {
        "system_id": s.system_id,
        "dataset": s.dataset,
        "group_id": s.group_id,
        "frame_kind": s.frame_kind,
        "split": split,
        "num_atoms": s.num_atoms,
        "num_edges": 0,
        "atomic_numbers": s.atomic_numbers.astype(np.uint8),
        "positions": s.positions.astype(np.float32).reshape(-1),
        "cell": None if s.cell is None else s.cell.reshape(-1),
        "pbc": s.pbc.tolist(),
        "energy": s.energy,
        "total_energy": s.total_energy,
        "forces": None if s.forces is None else s.forces.astype(np.float32).reshape(-1),
        "stress": None if s.stress is None else s.stress.reshape(-1),
        "fixed": None if s.fixed is None else s.fixed,
        "tags": None if s.tags is None else s.tags.astype(np.int8),
        "edge_src": None,
        "edge_dst": None,
        "edge_shift": None,
    }
    if graph is not None:
        if graph.shifts.size and np.abs(graph.shifts).max() > 127:
            raise ValueError(f"{s.system_id}: field 'edge_shift' exceeds int8 (cell far smaller than cutoff)")
        row["num_edges"] = graph.num_edges
        row["edge_src"] = graph.edge_index[0].astype(np.int32)
        row["edge_dst"] = graph.edge_index[1].astype(np.int32)
        row["edge_shift"] = graph.shifts.astype(np.int8).reshape(-1)
    return row


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """An Arrow table with the shard schema from rows made by `to_row`."""
    columns = {name: [row[name] for row in rows] for name in FIELD_NAMES}
    return pa.Table.from_pydict(columns, schema=ARROW_SCHEMA)


def from_row(row: dict[str, Any]) -> Structure:
    """Structure from a row dict (as produced by `to_row` or `pa.Table.to_pylist`). Validates."""
    n = int(row["num_atoms"])

    def arr(name: str, dtype, shape):
        value = row.get(name)
        return None if value is None else np.asarray(value, dtype=dtype).reshape(shape)

    return Structure(
        system_id=row["system_id"],
        atomic_numbers=arr("atomic_numbers", np.int64, (n,)),
        positions=arr("positions", np.float32, (n, 3)),
        cell=arr("cell", np.float64, (3, 3)),
        pbc=np.asarray(row["pbc"], dtype=bool),
        energy=row.get("energy"),
        total_energy=row.get("total_energy"),
        forces=arr("forces", np.float32, (n, 3)),
        stress=arr("stress", np.float64, (3, 3)),
        fixed=arr("fixed", bool, (n,)),
        tags=arr("tags", np.int64, (n,)),
        dataset=row["dataset"],
        group_id=row["group_id"],
        frame_kind=row["frame_kind"],
    )


def graph_from_row(row: dict[str, Any]):
    """The stored `NeighborGraph` of a row (pairs built with cutoff + skin, up to K_store per atom)."""
    from atomforge.graph import NeighborGraph

    if row.get("edge_src") is None:
        raise ValueError(f"{row['system_id']}: field 'edge_src' is null: this row has no stored graph")
    edge_index = np.stack(
        [np.asarray(row["edge_src"], dtype=np.int64), np.asarray(row["edge_dst"], dtype=np.int64)]
    )
    shifts = np.asarray(row["edge_shift"], dtype=np.int64).reshape(-1, 3)
    return NeighborGraph(edge_index=edge_index, shifts=shifts)
