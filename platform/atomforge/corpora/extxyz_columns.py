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

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
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


def checked_index(path: str) -> tuple[np.ndarray, np.ndarray] | None:
    """`frame_index`, or None unless its frames tile the file exactly as `corpora.extxyz.split_frames` splits it.

    Each frame must start on a line, span exactly its count + 2 lines, and the next frame must start
    right after it (trailing blank lines allowed). Any other file (a wrong count line, a blank line
    inside, a torn end) is left to the record-isolating path, which names the defect frame by frame.
    """
    import oxyz

    try:
        offsets, counts = frame_index(path)
    except (oxyz.ParseError, ValueError):
        return None
    data = np.fromfile(path, dtype=np.uint8)
    line_starts = np.concatenate([[0], np.flatnonzero(data == 10) + 1])
    if len(offsets) == 0 or offsets[0] != 0:
        return None
    line = np.searchsorted(line_starts, offsets)
    if line[-1] >= len(line_starts) or not np.array_equal(line_starts[np.minimum(line, len(line_starts) - 1)], offsets):
        return None
    ends = line + counts + 2  # line index just after each frame
    if not np.array_equal(ends[:-1], line[1:]) or ends[-1] > len(line_starts):
        return None
    tail = data[line_starts[ends[-1]]:] if ends[-1] < len(line_starts) else data[:0]
    return (offsets, counts) if not tail.size or np.isin(tail, (9, 10, 13, 32)).all() else None


def frame_bytes(path: str, offsets: np.ndarray, index: int) -> bytes:
    """The bytes of frame `index` (count line to the last atom line) of an indexed file."""
    with open(path, "rb") as fobj:
        fobj.seek(int(offsets[index]))
        if index + 1 < len(offsets):
            return fobj.read(int(offsets[index + 1] - offsets[index]))
        return fobj.read()


@contextlib.contextmanager
def plain_local_copy(url: str, storage_options: dict | None = None) -> Iterator[str]:
    """A local, uncompressed path holding `url`'s text: the path itself, or a temporary copy (deleted after).

    The C/Rust parsers read files by path; .xz/.gz/.bz2 and remote files are decompressed or
    copied once per work unit (xz decompresses at ~100 MB/s, a few % of a 5,000-frame file's work).
    """
    from atomforge.corpora import sources

    if sources.is_local(url) and sources.strip_compression(url) == url:
        yield sources.url_to_fs(url)[1]
        return
    with tempfile.NamedTemporaryFile(suffix=".extxyz") as copy:
        with sources.open_file(url, "rb", storage_options) as fobj:
            shutil.copyfileobj(fobj, copy, 1 << 22)
        copy.flush()
        yield copy.name


def read_columns(path: str, start: int, stop: int, decline_keys: tuple[str, ...] = ()) -> FrameColumns | None:
    """Frames [start, stop) of a local extxyz file as columns, or None where only ASE can say what they mean.

    `decline_keys`: comment-line keys that make the caller's own per-frame checks necessary (OC20
    frames that carry `sid` / `fid`, which must agree with the txt line).
    """
    import oxyz

    if stop <= start:
        return None
    try:
        batch = oxyz.read_batch(path, list(range(start, stop)), threads=1)
    except (oxyz.ParseError, IndexError, ValueError):
        return None
    if any(key in batch.metadata for key in decline_keys):
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


def to_batch(c: FrameColumns, system_id: list[str], group_id: list[str], dataset: str, frame_kind: str,
             source: list[str], energy: np.ndarray | None = None, total_energy: np.ndarray | None = None):
    """A `StructureBatch` of parsed frames with the reader's ids; `energy` (F,) eV replaces the file's
    energy (OC20: total minus reference) and `total_energy` keeps the raw total where given."""
    from atomforge.structure_batch import StructureBatch

    num_frames = len(c.atom_offsets) - 1

    def strings(values) -> np.ndarray:
        return np.array(values, dtype=object)

    return StructureBatch(
        system_id=strings(system_id), dataset=strings([dataset] * num_frames), group_id=strings(group_id),
        frame_kind=strings([frame_kind] * num_frames), source=strings(source), atom_offsets=c.atom_offsets,
        atomic_numbers=c.numbers, positions=c.positions, cell=c.cell, has_cell=c.has_cell, pbc=c.pbc,
        energy=c.energy if energy is None else energy, has_energy=c.has_energy.copy(),
        total_energy=np.zeros(num_frames) if total_energy is None else total_energy,
        has_total_energy=np.zeros(num_frames, bool) if total_energy is None else c.has_energy.copy(),
        forces=c.forces, has_forces=c.has_forces, stress=np.zeros((num_frames, 3, 3)),
        has_stress=np.zeros(num_frames, bool), fixed=c.fixed, has_fixed=c.has_fixed, tags=c.tags, has_tags=c.has_tags)
