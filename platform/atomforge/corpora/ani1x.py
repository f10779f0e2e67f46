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
ROWS_PER_UNIT = 10_000  # conformers per unit (~20 s of one core at ANI-1x sizes): ~500 units for ANI-1x
ROWS_OPTION = "rows"  # WorkUnit.options key holding a group's conformer range [start, stop)
COUNT_FIELDS = ("coordinates", "species", "energies")  # any of them gives a group's conformer count


def plan_rows(counts: list[int], groups_per_unit: int, rows_per_unit: int) -> list[tuple[int, int, tuple | None]]:
    """Units of a file whose groups hold `counts` conformers: (first group, stop group, rows or None).

    Consecutive groups are packed while the unit holds at most `groups_per_unit` groups and
    `rows_per_unit` conformers; a group above `rows_per_unit` is a run of units of its own, each
    a [start, stop) range of its conformers, ceil(count / rows_per_unit) equal ones. A function
    of the counts and options only.
    """
    units, start, rows = [], 0, 0
    for group, count in enumerate(counts):
        if count > rows_per_unit:
            if start < group:
                units.append((start, group, None))
            parts = -(-count // rows_per_unit)
            units += [(group, group + 1, (count * k // parts, count * (k + 1) // parts)) for k in range(parts)]
            start, rows = group + 1, 0
            continue
        if group > start and (group - start >= groups_per_unit or rows + count > rows_per_unit):
            units.append((start, group, None))
            start, rows = group, 0
        rows += count
    if start < len(counts):
        units.append((start, len(counts), None))
    return units


class ANI1xReader(StreamingCorpus):
    """ANI-1x conformers from HDF5 files under `url` (local or fsspec).

    Options:
        level: level of theory prefix (default "wb97x_dz"; e.g. "wb97x_tz", "ccsd(t)_cbs").
        forces: read `<level>.forces` (default True; set False for energy-only levels like ccsd(t)_cbs).
        groups_per_unit: at most this many formula groups per work unit (default 64).
        rows_per_unit: at most this many conformers per work unit (default 10,000): consecutive
            groups are packed up to it, and a bigger group is cut into equal conformer-row ranges
            (ANI-1x's largest formulas hold tens of thousands of conformers; 64 of them in one
            unit would leave most of a cluster idle behind it).
        dataset: task name (default "ani1x").
        frame_kind: default "unknown" (conformers from normal-mode and MD sampling, not relaxations).
        storage_options: fsspec options; kept on the reader, never in work units.
    """

    name = "ani1x"
    energy_convention = "total"

    def __init__(self, url: str, level: str = "wb97x_dz", forces: bool = True, groups_per_unit: int = 64,
                 rows_per_unit: int = ROWS_PER_UNIT, dataset: str = "ani1x", frame_kind: str = "unknown",
                 storage_options: dict | None = None) -> None:
        if frame_kind not in FRAME_KINDS:
            raise ValueError(f"option 'frame_kind' is {frame_kind!r}, expected one of {FRAME_KINDS}")
        for option, value in (("groups_per_unit", groups_per_unit), ("rows_per_unit", rows_per_unit)):
            if value < 1:
                raise ValueError(f"option {option!r} must be >= 1, got {value}")
        self.rows_per_unit = rows_per_unit
        self.url = url
        self.level = level
        self.forces = forces
        self.groups_per_unit = groups_per_unit
        self.dataset = dataset
        self.frame_kind = frame_kind
        self.storage_options = storage_options

    def work_units(self) -> list[WorkUnit]:
        """Per file, group ranges and conformer-row ranges (`plan_rows`; reads group names and shapes only).

        A file that cannot be opened is one unit of its own: reading it records it as unreadable.
        """
        options = {"root": self.url}
        units = []
        for path in sources.list_files(self.url, HDF5_SUFFIXES, self.storage_options):
            try:
                with open_hdf5(path, self.storage_options) as handle:
                    counts = [num_records(handle[name], COUNT_FIELDS + (f"{self.level}.energy",)) or 1
                              for name in group_names(handle, path)]
            except CorpusError:
                units.append(WorkUnit(self.name, path, 0, None, options))
                continue
            for start, stop, rows in plan_rows(counts, self.groups_per_unit, self.rows_per_unit):
                extra = {} if rows is None else {ROWS_OPTION: list(rows)}
                units.append(WorkUnit(self.name, path, start, stop, {**options, **extra}))
        return units

    def source_paths(self) -> list[str]:
        return sources.list_files(self.url, HDF5_SUFFIXES, self.storage_options)

    def read(self, unit: WorkUnit) -> Iterator[Structure | BadRecord]:
        """Conformers of the unit's groups, group by group, in stored order."""
        rows = unit.options.get(ROWS_OPTION)
        rows = None if rows is None else (int(rows[0]), int(rows[1]))
        with open_hdf5(unit.path, self.storage_options) as handle:
            for name in group_names(handle, unit.path)[unit.start:unit.stop]:
                group = handle[name]
                torchani = "species" in group
                try:
                    arrays = (self._torchani_arrays if torchani else self._formula_arrays)(group, name, unit.path, rows)
                except RecordError as error:
                    yield from self._bad_group(group, name, unit.path, error, rows)
                    continue
                yield from self._records(unit.path, name, *arrays, first=0 if rows is None else rows[0])

    def _formula_arrays(self, group, formula: str, url: str, rows: tuple[int, int] | None) -> tuple:
        """The group's arrays (only conformers [start, stop) with `rows`); shapes checked on the whole group."""
        numbers = read_dataset(group, "atomic_numbers", url, formula, (None,))
        num_atoms = numbers.shape[0]
        num_conf = num_records(group, ("coordinates",))
        coords = read_dataset(group, "coordinates", url, formula, (None, num_atoms, 3), rows)
        energy = read_dataset(group, f"{self.level}.energy", url, formula, (num_conf,), rows)
        forces = (read_dataset(group, f"{self.level}.forces", url, formula, (num_conf, num_atoms, 3), rows)
                  if self.forces else None)
        return np.broadcast_to(numbers, (coords.shape[0], num_atoms)), coords, energy, forces, \
            [formula] * coords.shape[0]

    def _torchani_arrays(self, group, name: str, url: str, rows: tuple[int, int] | None) -> tuple:
        species = read_dataset(group, "species", url, name, (None, None), rows)
        shape = tuple(group["species"].shape)  # the whole group's, which the other fields must match
        coords = read_dataset(group, "coordinates", url, name, shape + (3,), rows)
        energy = read_dataset(group, "energies", url, name, shape[:1], rows)
        forces = read_dataset(group, "forces", url, name, shape + (3,), rows) if self.forces else None
        return species, coords, energy, forces, [formula_of(row) for row in species]

    def _bad_group(self, group, name: str, url: str, error: RecordError,
                   rows: tuple[int, int] | None) -> Iterator[BadRecord]:
        """Every conformer of a group (or of its row range) whose arrays cannot be read, counted from any
        dataset's shape."""
        count = num_records(group, COUNT_FIELDS + (f"{self.level}.energy",))
        if count is None:  # no dataset says how many conformers the group holds
            if rows is not None and rows[0] > 0:
                return  # the group's first range reports it
            yield BadRecord(f"{self.dataset}/{name}/*", f"{url}[{name}]", error.reason,
                            f"{url}[{name}]: {error.detail}; conformer count unknown", uncounted=True)
            return
        indices = range(count) if rows is None else range(rows[0], min(rows[1], count))
        ids = [f"{self.dataset}/{name}/{index}" for index in indices]
        yield from bad_records(ids, [f"{url}[{name}/{index}]" for index in indices], error)

    def _records(self, url, name, numbers, coords, energy, forces, formulas,
                 first: int = 0) -> Iterator[Structure | BadRecord]:
        """One record per conformer (conformer `first` first); Hartree -> eV, Hartree/Å -> eV/Å."""
        energy_ev = energy.astype(np.float64) * HARTREE_TO_EV
        forces_ev = None if forces is None else forces.astype(np.float64) * HARTREE_TO_EV
        for index in range(coords.shape[0]):
            system_id = f"{self.dataset}/{name}/{first + index}"
            yield build_record(
                f"{url}[{name}/{first + index}]", system_id,
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
