"""ANI-1x reader: the released HDF5 (`ani1x-release.h5`), one group per chemical formula.

Per group: atomic_numbers (Na,), coordinates (Nc, Na, 3) Å, `<level>.energy` (Nc,) Hartree,
`<level>.forces` (Nc, Na, 3) Hartree/Å. Converted here to eV and eV/Å with
HARTREE_TO_EV = 27.211386245988 (CODATA 2018; `ase.units.Hartree` is the older CODATA 2014
value 27.211386024, which would differ by 8 ppm). Conformers whose energy or forces at the chosen
level are NaN are skipped as BadRecords with reason "nan_label" (counted, never loaded). A group
with a missing, unreadable or misshapen dataset makes each of its conformers a BadRecord naming
the field (counted from the shape of `coordinates` or the energies), and the next group is read.

Also reads the newer torchani layout (groups keyed by atom count with `species`, `energies`,
`forces`, as in ANI-2x files): the group id is then the formula of each conformer.

system_id = `ani1x/<formula>/<conformer index>`; group_id = `ani1x/<formula>` (split by formula:
conformers of one molecule must not straddle train and test).
"""

from __future__ import annotations

from collections import Counter
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
from atomforge.corpora.hdf5files import group_names, num_records, open_hdf5, read_dataset
from atomforge.schema import FRAME_KINDS, Structure

HARTREE_TO_EV = 27.211386245988  # eV per Hartree, CODATA 2018
HDF5_SUFFIXES = (".h5", ".hdf5")


class ANI1xReader(StreamingCorpus):
    """ANI-1x conformers from HDF5 files under `url` (local or fsspec).

    Options:
        level: level of theory prefix (default "wb97x_dz"; e.g. "wb97x_tz", "ccsd(t)_cbs").
        forces: read `<level>.forces` (default True; set False for energy-only levels like ccsd(t)_cbs).
        groups_per_unit: formula groups per work unit (default 64).
        dataset: task name (default "ani1x").
        frame_kind: default "unknown" (conformers from normal-mode and MD sampling, not relaxations).
        storage_options: fsspec options; kept on the reader, never in work units.
    """

    name = "ani1x"
    energy_convention = "total"

    def __init__(self, url: str, level: str = "wb97x_dz", forces: bool = True, groups_per_unit: int = 64,
                 dataset: str = "ani1x", frame_kind: str = "unknown", storage_options: dict | None = None) -> None:
        if frame_kind not in FRAME_KINDS:
            raise ValueError(f"option 'frame_kind' is {frame_kind!r}, expected one of {FRAME_KINDS}")
        if groups_per_unit < 1:
            raise ValueError(f"option 'groups_per_unit' must be >= 1, got {groups_per_unit}")
        self.url = url
        self.level = level
        self.forces = forces
        self.groups_per_unit = groups_per_unit
        self.dataset = dataset
        self.frame_kind = frame_kind
        self.storage_options = storage_options

    def work_units(self) -> list[WorkUnit]:
        """Ranges of `groups_per_unit` formula groups per file (lists group names only).

        A file that cannot be opened is one unit of its own: reading it records it as unreadable.
        """
        options = {"root": self.url}
        units = []
        for path in sources.list_files(self.url, HDF5_SUFFIXES, self.storage_options):
            try:
                with open_hdf5(path, self.storage_options) as handle:
                    num = len(group_names(handle, path))
            except CorpusError:
                units.append(WorkUnit(self.name, path, 0, None, options))
                continue
            units += [WorkUnit(self.name, path, start, min(start + self.groups_per_unit, num), options)
                      for start in range(0, num, self.groups_per_unit)]
        return units

    def source_paths(self) -> list[str]:
        return sources.list_files(self.url, HDF5_SUFFIXES, self.storage_options)

    def read(self, unit: WorkUnit) -> Iterator[Structure | BadRecord]:
        """Conformers of the unit's groups, group by group, in stored order."""
        with open_hdf5(unit.path, self.storage_options) as handle:
            for name in group_names(handle, unit.path)[unit.start:unit.stop]:
                group = handle[name]
                torchani = "species" in group
                try:
                    arrays = (self._torchani_arrays if torchani else self._formula_arrays)(group, name, unit.path)
                except RecordError as error:
                    yield from self._bad_group(group, name, unit.path, error)
                    continue
                yield from self._records(unit.path, name, *arrays)

    def _formula_arrays(self, group, formula: str, url: str) -> tuple:
        numbers = read_dataset(group, "atomic_numbers", url, formula, (None,))
        num_atoms = numbers.shape[0]
        coords = read_dataset(group, "coordinates", url, formula, (None, num_atoms, 3))
        num_conf = coords.shape[0]
        energy = read_dataset(group, f"{self.level}.energy", url, formula, (num_conf,))
        forces = (read_dataset(group, f"{self.level}.forces", url, formula, (num_conf, num_atoms, 3))
                  if self.forces else None)
        return np.broadcast_to(numbers, (num_conf, num_atoms)), coords, energy, forces, [formula] * num_conf

    def _torchani_arrays(self, group, name: str, url: str) -> tuple:
        species = read_dataset(group, "species", url, name, (None, None))
        coords = read_dataset(group, "coordinates", url, name, species.shape + (3,))
        energy = read_dataset(group, "energies", url, name, species.shape[:1])
        forces = read_dataset(group, "forces", url, name, species.shape + (3,)) if self.forces else None
        return species, coords, energy, forces, [formula_of(row) for row in species]

    def _bad_group(self, group, name: str, url: str, error: RecordError) -> Iterator[BadRecord]:
        """Every conformer of a group whose arrays cannot be read, counted from any dataset's shape."""
        count = num_records(group, ("coordinates", f"{self.level}.energy", "species", "energies"))
        if count is None:  # no dataset says how many conformers the group holds
            yield BadRecord(f"{self.dataset}/{name}/*", f"{url}[{name}]", error.reason,
                            f"{url}[{name}]: {error.detail}; conformer count unknown", uncounted=True)
            return
        ids = [f"{self.dataset}/{name}/{index}" for index in range(count)]
        yield from bad_records(ids, [f"{url}[{name}/{index}]" for index in range(count)], error)

    def _records(self, url, name, numbers, coords, energy, forces, formulas) -> Iterator[Structure | BadRecord]:
        """One record per conformer; Hartree -> eV, Hartree/Å -> eV/Å."""
        energy_ev = energy.astype(np.float64) * HARTREE_TO_EV
        forces_ev = None if forces is None else forces.astype(np.float64) * HARTREE_TO_EV
        for index in range(coords.shape[0]):
            system_id = f"{self.dataset}/{name}/{index}"
            yield build_record(
                f"{url}[{name}/{index}]", system_id,
                atomic_numbers=numbers[index], positions=coords[index],
                energy=energy_ev[index], forces=None if forces_ev is None else forces_ev[index],
                dataset=self.dataset, group_id=f"{self.dataset}/{formulas[index]}", frame_kind=self.frame_kind,
            )


def formula_of(atomic_numbers: np.ndarray) -> str:
    """Hill-free formula in atomic-number order, like ANI-1x group names: [6,1,1,1,1] -> 'C1H4'."""
    from ase.data import chemical_symbols

    counts = Counter(int(z) for z in np.asarray(atomic_numbers).reshape(-1) if z > 0)
    order = sorted(counts, key=lambda z: chemical_symbols[z])
    return "".join(f"{chemical_symbols[z]}{counts[z]}" for z in order)
