"""rMD17 reader: one `rmd17_<molecule>.npz` per molecule (revised MD17, Christensen & von Lilienfeld).

Arrays: nuclear_charges (Na,), coords (Nc, Na, 3) Å, energies (Nc,) kcal/mol, forces (Nc, Na, 3)
kcal/mol/Å, and old_indices / old_energies / old_forces (the original MD17 labels, not used).
Converted here with KCAL_PER_MOL_TO_EV = 4184 J / (N_A e) = 0.0433641043 eV (exact SI values of
N_A and e; CORPORA.md rounds it to 0.0433641; `ase.units.kcal / ase.units.mol` is the CODATA 2014
value 0.04336410390). `old_indices[i]` is kept in `info["old_index"]`.

The npz members are loaded one array at a time (a released file is ~100k frames, tens of MB).
system_id = `rmd17/<molecule>/<frame>`; group_id = system_id (rMD17 benchmarks split by frame).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from atomforge.corpora import sources
from atomforge.corpora.base import BadRecord, CorpusError, StreamingCorpus, WorkUnit, build_record
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
            with sources.open_file(path, "rb", self.storage_options) as fobj:
                num = _member(np.load(fobj), "energies", path).shape[0]
            units += [WorkUnit(self.name, path, start, min(start + self.frames_per_unit, num), {"root": self.url})
                      for start in range(0, num, self.frames_per_unit)]
        return units

    def read(self, unit: WorkUnit) -> Iterator[Structure | BadRecord]:
        """Frames of one range, kcal/mol -> eV."""
        molecule = molecule_name(unit.path)
        with sources.open_file(unit.path, "rb", self.storage_options) as fobj:
            archive = np.load(fobj)
            arrays = {name: _member(archive, name, unit.path) for name in REQUIRED}
            old_indices = archive["old_indices"] if "old_indices" in archive.files else None
        _check_shapes(arrays, unit.path)
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


def molecule_name(url: str) -> str:
    """`.../rmd17_aspirin.npz` -> 'aspirin'."""
    stem = sources.strip_compression(url.rsplit("/", 1)[-1]).removesuffix(".npz")
    return stem.removeprefix("rmd17_")


def _member(archive, name: str, url: str) -> np.ndarray:
    if name not in archive.files:
        raise CorpusError(f"{url}: record '{name}': array missing (has {sorted(archive.files)})")
    return archive[name]


def _check_shapes(arrays: dict[str, np.ndarray], url: str) -> None:
    num_atoms = arrays["nuclear_charges"].shape[0]
    num_frames = arrays["energies"].shape[0]
    expected = {"nuclear_charges": (num_atoms,), "coords": (num_frames, num_atoms, 3),
                "energies": (num_frames,), "forces": (num_frames, num_atoms, 3)}
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise CorpusError(f"{url}: record '{name}': shape {arrays[name].shape}, expected {shape}")
