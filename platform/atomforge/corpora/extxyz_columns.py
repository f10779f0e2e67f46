"""Fast extxyz reading: frame ranges of a file parsed straight into columns by oxyz, with ASE's meaning.

`benchmarks/extxyz_parsers.py` timed the maintained parsers on OC20 S2EF files (65-atom slabs,
one thread): oxyz's columnar batches ~12x ASE's `ase.io.iread`, libextxyz (`extxyz`) ~5x,
`ase-extxyz` ~2x, chemfiles slower than ASE, extxyz-ng unable to read the files; oxyz's and
libextxyz's values were bit-identical to ASE's. oxyz also indexes a file's frames (byte offset
and atom count of every count line, ~1 GB/s) without parsing them, which is what frame-range work
units need. So oxyz it is.

`read_columns` gives the fields a `Structure` would get from `schema.from_ase(ase.io.read(...))`,
bit for bit (tests/corpora/test_extxyz_columns.py): species capitalised as ASE does, `Z` winning
over `species`, pbc True when a Lattice is given without pbc, `move_mask` -> fixed, `tags`,
`energy` (not `free_energy`), `forces`. Anything whose ASE meaning it does not reproduce (a
frame oxyz rejects, frames whose keys differ within the range, an unknown element, stress,
per-direction move masks, non-numeric energies) returns None, and the caller reads that range
through the record-isolating ASE path instead: fast when the file is clean, exact when it is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.data import atomic_numbers as SYMBOLS_TO_Z  # ASE's own table ('X' = 0), so numbers agree


@dataclass
class FrameColumns:
    """Frames of one range: atom_offsets (F + 1,); numbers (A,) int64; positions (A, 3) Å;
    cell (F, 3, 3) Å, has_cell (F,); pbc (F, 3); energy (F,) eV, has_energy (F,);
    forces (A, 3) eV/Å, fixed (A,), tags (A,) int64, each with a has_* (F,) mask.
    """

    atom_offsets: np.ndarray
    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    has_cell: np.ndarray
    pbc: np.ndarray
    energy: np.ndarray
    has_energy: np.ndarray
    forces: np.ndarray
    has_forces: np.ndarray
    fixed: np.ndarray
    has_fixed: np.ndarray
    tags: np.ndarray
    has_tags: np.ndarray


def frame_index(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(byte offset of each frame's count line (F,), its atom count (F,)) of a local file, no parsing."""
    import oxyz

    index = oxyz.scan(path)
    return np.asarray(index.offsets, dtype=np.int64), np.asarray(index.n_atoms, dtype=np.int64)


def read_columns(path: str, start: int, stop: int) -> FrameColumns | None:
    """Frames [start, stop) of a local extxyz file as columns, or None where only ASE can say what they mean."""
    import oxyz

    if stop <= start:
        return None
    try:
        batch = oxyz.read_batch(path, list(range(start, stop)), threads=1)
    except (oxyz.ParseError, IndexError, ValueError):
        return None
    return _columns(batch.columns, batch.metadata, np.asarray(batch.offsets, dtype=np.int64))


def _numbers(columns: dict) -> np.ndarray | None:
    if "Z" in columns:  # ASE takes numbers over symbols when a file has both
        z = np.asarray(columns["Z"])
        return z.astype(np.int64) if z.dtype.kind in "iu" and z.ndim == 1 else None
    if "species" not in columns or not isinstance(columns["species"], list):
        return None
    unique, inverse = np.unique(np.asarray(columns["species"], dtype=str), return_inverse=True)
    try:
        table = np.array([SYMBOLS_TO_Z[s.capitalize()] for s in unique.tolist()], dtype=np.int64)
    except KeyError:  # an unknown element: ASE's path names it as the record's error
        return None
    return table[inverse.reshape(-1)]


def _columns(columns: dict, meta: dict, offsets: np.ndarray) -> FrameColumns | None:
    num_frames, num_atoms = len(offsets) - 1, int(offsets[-1])
    numbers = _numbers(columns)
    positions = np.asarray(columns.get("pos"))
    if numbers is None or positions.dtype.kind != "f" or positions.shape != (num_atoms, 3):
        return None
    if "stress" in meta or "move_mask" in columns and np.asarray(columns["move_mask"]).ndim != 1:
        return None  # ASE turns these into Voigt stress / FixCartesian: its path handles them
    cell = np.zeros((num_frames, 3, 3))
    if "Lattice" in meta:
        lattice = np.asarray(meta["Lattice"])
        if lattice.dtype.kind not in "iuf" or lattice.size != 9 * num_frames:
            return None
        cell = lattice.astype(np.float64).reshape(num_frames, 3, 3)  # rows a1, a2, a3 as ASE's cell
    pbc = _pbc(meta, num_frames)
    if pbc is None:
        return None
    energy = np.zeros(num_frames)
    if "energy" in meta:
        values = np.asarray(meta["energy"])
        if values.dtype.kind not in "iuf":
            return None
        energy = values.astype(np.float64).reshape(num_frames)
    per_atom = _per_atom(columns, num_atoms)
    if per_atom is None:
        return None
    forces, fixed, tags = per_atom
    has = np.ones(num_frames, dtype=bool)
    return FrameColumns(
        atom_offsets=offsets, numbers=numbers, positions=positions.astype(np.float64), cell=cell,
        has_cell=pbc.any(axis=1) | (np.abs(cell).reshape(num_frames, -1).sum(axis=1) > 0), pbc=pbc,
        energy=energy, has_energy=has & ("energy" in meta),
        forces=forces if forces is not None else np.zeros((num_atoms, 3)), has_forces=has & (forces is not None),
        fixed=fixed if fixed is not None else np.zeros(num_atoms, bool), has_fixed=has & (fixed is not None),
        tags=tags if tags is not None else np.zeros(num_atoms, np.int64), has_tags=has & (tags is not None),
    )


def _pbc(meta: dict, num_frames: int) -> np.ndarray | None:
    if "pbc" in meta:
        pbc = np.asarray(meta["pbc"])
        return pbc.reshape(num_frames, 3) if pbc.dtype == bool and pbc.size == 3 * num_frames else None
    return np.full((num_frames, 3), "Lattice" in meta)  # ASE: a Lattice without pbc is periodic


def _per_atom(columns: dict, num_atoms: int):
    """(forces (A, 3) or None, fixed (A,) or None, tags (A,) or None), or None for unexpected dtypes."""
    forces = fixed = tags = None
    if "forces" in columns:
        forces = np.asarray(columns["forces"])
        if forces.dtype.kind != "f" or forces.shape != (num_atoms, 3):
            return None
        forces = forces.astype(np.float64)
    if "move_mask" in columns:
        mask = np.asarray(columns["move_mask"])
        if mask.dtype != bool:
            return None
        fixed = ~mask
    if "tags" in columns:
        tags = np.asarray(columns["tags"])
        if tags.dtype.kind not in "iu":
            return None
        tags = tags.astype(np.int64)
    return forces, fixed, tags
