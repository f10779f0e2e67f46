"""rMD17 reader: one `rmd17_<molecule>.npz` per molecule (revised MD17, Christensen & von Lilienfeld).

Arrays: nuclear_charges (Na,), coords (Nc, Na, 3) Å, energies (Nc,) kcal/mol, forces (Nc, Na, 3)
kcal/mol/Å, and old_indices / old_energies / old_forces (the original MD17 labels, not used).
Converted here with KCAL_PER_MOL_TO_EV = 4184 J / (N_A e) = 0.0433641043 eV (exact SI values of
N_A and e; CORPORA.md rounds it to 0.0433641; `ase.units.kcal / ase.units.mol` is the CODATA 2014
value 0.04336410390). `old_indices[i]` is kept in `info["old_index"]`.

The npz members are loaded one array at a time (a released file is ~100k frames, tens of MB).
A missing or misshapen array spoils every frame: each frame of the unit is then a BadRecord
naming the array (the frame count comes from `energies`, read when planning).
system_id = `rmd17/<molecule>/<frame>`; group_id = system_id (rMD17 benchmarks split by frame).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator

import numpy as np

from atomforge.corpora import sources
from atomforge.corpora.base import (
    BadRecord,
    CorpusError,
    RecordError,
    StreamingCorpus,
    WorkUnit,
    bad_records,
    build_record,
)
from atomforge.schema import Structure

KCAL_PER_MOL_TO_EV = 4184.0 / (6.02214076e23 * 1.602176634e-19)  # eV per kcal/mol
REQUIRED = ("nuclear_charges", "coords", "energies", "forces")


class RMD17Reader(StreamingCorpus):
    """rMD17 frames from `.npz` files under `url` (local or fsspec).

    Options:
        frames_per_unit: frames per work unit (default 100,000: one unit per released file).
        storage_options: fsspec options; kept on the reader, never in work units.
    """

    name = "rmd17"
    energy_convention = "total"

    def __init__(self, url: str, frames_per_unit: int = 100_000, storage_options: dict | None = None) -> None:
        if frames_per_unit < 1:
            raise ValueError(f"option 'frames_per_unit' must be >= 1, got {frames_per_unit}")
        self.url = url
        self.frames_per_unit = frames_per_unit
        self.storage_options = storage_options

    def work_units(self) -> list[WorkUnit]:
        """Frame ranges per file (reads only the small `energies` member to count frames)."""
        units = []
        for path in sources.list_files(self.url, (".npz",), self.storage_options):
            try:
                with sources.open_file(path, "rb", self.storage_options) as fobj:
                    num = _energies_count(np.load(fobj), path)
            except (OSError, EOFError, zipfile.BadZipFile):  # not an npz: reading it records it as unreadable
                units.append(WorkUnit(self.name, path, 0, None, {"root": self.url}))
                continue
            units += [WorkUnit(self.name, path, start, min(start + self.frames_per_unit, num), {"root": self.url})
                      for start in range(0, num, self.frames_per_unit)]
        return units

    def read(self, unit: WorkUnit) -> Iterator[Structure | BadRecord]:
        """Frames of one range, kcal/mol -> eV."""
        molecule = molecule_name(unit.path)
        try:
            with sources.open_file(unit.path, "rb", self.storage_options) as fobj:
                archive = np.load(fobj)
                arrays = {name: _member(archive, name) for name in REQUIRED}
                old_indices = archive["old_indices"] if "old_indices" in archive.files else None
            _check_shapes(arrays)
        except (OSError, EOFError, zipfile.BadZipFile) as err:
            raise CorpusError(f"{unit.path}: not a readable .npz archive ({type(err).__name__}: {err})") from err
        except RecordError as error:
            frames = range(unit.start, unit.stop or unit.start)
            yield from bad_records([f"rmd17/{molecule}/{i}" for i in frames],
                                   [f"{unit.path}[frame {i}]" for i in frames], error)
            return
        numbers = arrays["nuclear_charges"]
        stop = arrays["energies"].shape[0] if unit.stop is None else unit.stop
        for index in range(unit.start, stop):
            info = {} if old_indices is None else {"old_index": int(old_indices[index])}
            yield build_record(
                f"{unit.path}[frame {index}]", f"rmd17/{molecule}/{index}",
                atomic_numbers=numbers, positions=arrays["coords"][index],
                energy=float(arrays["energies"][index]) * KCAL_PER_MOL_TO_EV,
                forces=arrays["forces"][index] * KCAL_PER_MOL_TO_EV,
                dataset="rmd17", frame_kind="md", info=info,
            )


def _energies_count(archive, url: str) -> int:
    """Frames of a file, from its `energies` member (the only one read when planning)."""
    if "energies" not in archive.files:
        raise CorpusError(f"{url}: array 'energies' missing (has {sorted(archive.files)}): frames cannot be counted")
    return archive["energies"].shape[0]


def molecule_name(url: str) -> str:
    """`.../rmd17_aspirin.npz` -> 'aspirin'."""
    stem = sources.strip_compression(url.rsplit("/", 1)[-1]).removesuffix(".npz")
    return stem.removeprefix("rmd17_")


def _member(archive, name: str) -> np.ndarray:
    if name not in archive.files:
        raise RecordError("missing_field", f"field '{name}': array missing (has {sorted(archive.files)})")
    return archive[name]


def _check_shapes(arrays: dict[str, np.ndarray]) -> None:
    num_atoms = arrays["nuclear_charges"].shape[0]
    num_frames = arrays["energies"].shape[0]
    expected = {"nuclear_charges": (num_atoms,), "coords": (num_frames, num_atoms, 3),
                "energies": (num_frames,), "forces": (num_frames, num_atoms, 3)}
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise RecordError("bad_shape", f"field '{name}': shape {arrays[name].shape}, expected {shape}")
