"""Reader for anything `ase.io` / `ase.db` reads: extxyz, ASE trajectories, ASE databases, vasprun.xml.

One work unit per file (or per row range of an ASE database when `rows_per_unit` is set).
Labels come from the file's calculator results or info/arrays: energy (eV), forces (eV/Å),
stress (eV/Å³, ASE sign convention); FixAtoms -> `fixed`, tags kept. ASE already stores eV/Å,
so nothing is converted. fairchem `.aselmdb` files are delegated to `atomforge.corpora.aselmdb`.

system_id = `<dataset>/<file path relative to the corpus root, no suffix>/<frame index or row id>`.
group_id = the file (trajectory-like formats: frames of one run are correlated) or the record
(databases of independent structures); override with `group_by`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from atomforge.corpora import sources
from atomforge.corpora.base import (
    LABEL_FIELDS,
    BadRecord,
    CorpusError,
    StreamingCorpus,
    WorkUnit,
    nan_label_field,
)
from atomforge.schema import FRAME_KINDS, Structure

# format suffix -> how the records are read
STREAM_FORMATS = {".extxyz": "extxyz", ".xyz": "extxyz", ".xml": "vasp-xml", ".traj": "traj"}
DB_FORMATS = (".db", ".json")
ASELMDB_SUFFIXES = (".aselmdb",)  # fairchem v2 ASE-LMDB, see lmdbfiles.py
SUFFIXES = tuple(STREAM_FORMATS) + DB_FORMATS + ASELMDB_SUFFIXES
GROUP_BY = ("file", "frame")


class AseFilesReader(StreamingCorpus):
    """Structures from ASE-readable files under `url` (a file, a folder or a glob; local or fsspec).

    Options:
        dataset: task name written into every Structure (default "ase").
        frame_kind: one of schema.FRAME_KINDS for every record (default "unknown").
        group_by: "file", "frame", or an info / key_value_pairs key naming the split group;
            default "file" for trajectories and "frame" for databases.
        rows_per_unit: split ASE databases into work units of this many rows (default: one per file).
        storage_options: fsspec options (credentials); kept on the reader, never in work units.
    """

    name = "ase"
    energy_convention = "total"

    def __init__(self, url: str, dataset: str = "ase", frame_kind: str = "unknown",
                 group_by: str | None = None, rows_per_unit: int | None = None,
                 storage_options: dict | None = None) -> None:
        if frame_kind not in FRAME_KINDS:
            raise ValueError(f"option 'frame_kind' is {frame_kind!r}, expected one of {FRAME_KINDS}")
        if rows_per_unit is not None and rows_per_unit < 1:
            raise ValueError(f"option 'rows_per_unit' must be >= 1, got {rows_per_unit}")
        self.url = url
        self.dataset = dataset
        self.frame_kind = frame_kind
        self.group_by = group_by
        self.rows_per_unit = rows_per_unit
        self.storage_options = storage_options

    def _options(self) -> dict[str, Any]:
        return {"root": self.url, "dataset": self.dataset, "frame_kind": self.frame_kind,
                "group_by": self.group_by}

    def work_units(self) -> list[WorkUnit]:
        """One unit per file; ASE databases split by row ranges when `rows_per_unit` is set."""
        units = []
        for path in sources.list_files(self.url, SUFFIXES, self.storage_options):
            if self.rows_per_unit and sources.base_suffix(path) in DB_FORMATS:
                num_rows = _connect(path, self.storage_options).count()
                for start in range(0, num_rows, self.rows_per_unit):
                    stop = min(start + self.rows_per_unit, num_rows)
                    units.append(WorkUnit(self.name, path, start, stop, self._options()))
            else:
                units.append(WorkUnit(self.name, path, 0, None, self._options()))
        return units

    def read(self, unit: WorkUnit) -> Iterator[Structure | BadRecord]:
        """Records of one file (or row range), in file order."""
        suffix = sources.base_suffix(unit.path)
        if suffix in ASELMDB_SUFFIXES:
            from atomforge.corpora.lmdbfiles import read_aselmdb_rows

            rows = read_aselmdb_rows(sources.local_copy(unit.path, self.storage_options), unit)
            yield from (self._record(unit, key, atoms, kvp, "frame") for key, atoms, kvp in rows)
        elif suffix in DB_FORMATS:
            rows = _db_rows(_connect(unit.path, self.storage_options), unit)
            yield from (self._record(unit, key, atoms, kvp, "frame") for key, atoms, kvp in rows)
        else:
            frames = _stream_frames(unit.path, STREAM_FORMATS[suffix], self.storage_options)
            yield from (self._record(unit, str(i), atoms, atoms.info, "file") for i, atoms in frames)

    def _record(self, unit: WorkUnit, key: str, atoms, meta: dict, default_group: str):
        opts = unit.options
        stem = sources.relative_stem(unit.path, opts.get("root", unit.path))
        dataset = opts.get("dataset", self.dataset)
        system_id = f"{dataset}/{stem}/{key}"
        group_by = opts.get("group_by") or default_group
        if group_by == "file":
            group_id = f"{dataset}/{stem}"
        elif group_by == "frame":
            group_id = system_id
        elif group_by in meta:
            group_id = f"{dataset}/{meta[group_by]}"
        else:
            raise CorpusError(f"{unit.path}: record {key}: group_by key {group_by!r} not in its info")
        return record_from_atoms(atoms, f"{unit.path}[{key}]", system_id, dataset=dataset,
                                 group_id=group_id, frame_kind=opts.get("frame_kind", self.frame_kind))


def record_from_atoms(atoms, source: str, system_id: str, **meta: Any) -> Structure | BadRecord:
    """`schema.from_ase` that turns a rejected record into a BadRecord naming `source`."""
    from atomforge.schema import from_ase

    labels = {**_labels(atoms), **{k: v for k, v in meta.items() if k in LABEL_FIELDS}}
    bad = nan_label_field(labels)
    if bad is not None:
        return BadRecord(system_id, source, "nan_label", f"{source}: {system_id}: field '{bad}' contains NaN or inf")
    try:
        return from_ase(atoms, system_id, **meta)
    except ValueError as err:
        return BadRecord(system_id, source, "validation", f"{source}: {err}")


def _labels(atoms) -> dict[str, Any]:
    results = atoms.calc.results if atoms.calc is not None else {}
    return {
        "energy": results.get("energy", atoms.info.get("energy")),
        "forces": results.get("forces", atoms.arrays.get("forces")),
        "stress": results.get("stress", atoms.info.get("stress")),
    }


def _stream_frames(url: str, fmt: str, storage_options: dict | None) -> Iterator[tuple[int, Any]]:
    """(index, Atoms) pairs read one at a time from a streaming file object."""
    import ase.io
    from ase.io.trajectory import TrajectoryReader

    mode = "rt" if fmt == "extxyz" else "rb"
    with sources.open_file(url, mode, storage_options) as fobj:
        if fmt == "traj":
            frames = iter(TrajectoryReader(fobj))
        else:
            frames = ase.io.iread(fobj, index=":", format=fmt)
        index = 0
        while True:
            try:
                atoms = next(frames)
            except StopIteration:
                return
            except Exception as err:  # ASE parsers raise many types; name file and frame
                raise CorpusError(f"{url}: frame {index}: cannot parse ({type(err).__name__}: {err})") from err
            yield index, atoms
            index += 1


def _connect(url: str, storage_options: dict | None):
    """An ASE database on a local copy of `url` (type from the URL's suffix: cached copies have none)."""
    import ase.db

    return ase.db.connect(sources.local_copy(url, storage_options), type=sources.base_suffix(url)[1:])


def _db_rows(db, unit: WorkUnit) -> Iterator[tuple[str, Any, dict]]:
    """(row id, Atoms, key_value_pairs) of an ASE database, limited to the unit's row range."""
    try:
        limit = None if unit.stop is None else unit.stop - unit.start
        for row in db.select(offset=unit.start, limit=limit, sort="id"):
            yield str(row.id), row.toatoms(), dict(row.key_value_pairs)
    except CorpusError:
        raise
    except Exception as err:  # sqlite3 / json errors: the file is not a readable ASE database
        raise CorpusError(f"{unit.path}: not a readable ASE database ({type(err).__name__}: {err})") from err
