"""Reader for anything `ase.io` / `ase.db` reads: extxyz, ASE trajectories, ASE databases, vasprun.xml.

One work unit per file (or per row range of an ASE database when `rows_per_unit` is set).
Labels come from the file's calculator results or info/arrays: energy (eV), forces (eV/Å),
stress (eV/Å³, ASE sign convention); FixAtoms -> `fixed`, tags kept. ASE already stores eV/Å,
so nothing is converted. fairchem `.aselmdb` files are read through ase-db-backends (lmdbfiles.py).

Record-level isolation: extxyz files are split at frame boundaries (`corpora.extxyz`) and each
frame parsed alone, trajectory frames and database rows are decoded one by one, so a bad frame
or row is one BadRecord and reading goes on. Only a file that cannot be opened (or decompressed)
raises CorpusError.

system_id = `<dataset>/<file path relative to the corpus root, no suffix>/<frame index or row id>`.
group_id = the file (trajectory-like formats: frames of one run are correlated) or the record
(databases of independent structures); override with `group_by`.
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Iterator
from typing import Any

from atomforge.corpora import sources
from atomforge.corpora.base import (
    LABEL_FIELDS,
    BadRecord,
    CorpusError,
    RecordError,
    StreamingCorpus,
    WorkUnit,
    nan_label_field,
)
from atomforge.corpora.extxyz import frame_atoms, split_frames
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
        property_key: read a per-structure property from this info / key_value_pairs key as the
            `energy` label (forces and stress none): what a property fine-tuning task trains on.
        property_per_atom: the property is intensive (a mean over atoms): stored as N·value, so a
            sum-pooled model's energy / N predicts it.
        storage_options: fsspec options (credentials); kept on the reader, never in work units.
    """

    name = "ase"
    energy_convention = "total"

    def __init__(self, url: str, dataset: str = "ase", frame_kind: str = "unknown",
                 group_by: str | None = None, rows_per_unit: int | None = None, property_key: str | None = None,
                 property_per_atom: bool = False, storage_options: dict | None = None) -> None:
        if frame_kind not in FRAME_KINDS:
            raise ValueError(f"option 'frame_kind' is {frame_kind!r}, expected one of {FRAME_KINDS}")
        if rows_per_unit is not None and rows_per_unit < 1:
            raise ValueError(f"option 'rows_per_unit' must be >= 1, got {rows_per_unit}")
        self.url = url
        self.dataset = dataset
        self.frame_kind = frame_kind
        self.group_by = group_by
        self.rows_per_unit = rows_per_unit
        self.property_key, self.property_per_atom = property_key, bool(property_per_atom)
        self.storage_options = storage_options

    def _options(self) -> dict[str, Any]:
        options = {"root": self.url, "dataset": self.dataset, "frame_kind": self.frame_kind, "group_by": self.group_by}
        if self.property_key:
            options |= {"property_key": self.property_key, "property_per_atom": self.property_per_atom}
        return options

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

    def source_paths(self) -> list[str]:
        return sources.list_files(self.url, SUFFIXES, self.storage_options)

    def read(self, unit: WorkUnit) -> Iterator[Structure | BadRecord]:
        """Records of one file (or row range), in file order."""
        suffix = sources.base_suffix(unit.path)
        if suffix in ASELMDB_SUFFIXES:
            from atomforge.corpora.lmdbfiles import aselmdb_rows

            rows = aselmdb_rows(sources.local_copy(unit.path, self.storage_options), unit)
            yield from (self._record(unit, key, atoms, kvp, "frame") for key, atoms, kvp in rows)
        elif suffix in DB_FORMATS:
            rows = _db_rows(_connect(unit.path, self.storage_options), unit)
            yield from (self._record(unit, key, atoms, kvp, "frame") for key, atoms, kvp in rows)
        else:
            frames = stream_frames(unit.path, STREAM_FORMATS[suffix], self.storage_options)
            yield from (self._record(unit, str(i), atoms, getattr(atoms, "info", {}), "file") for i, atoms in frames)

    def _record(self, unit: WorkUnit, key: str, atoms, meta: dict, default_group: str):
        """A Structure or BadRecord of one frame/row; `atoms` may be the RecordError that reading it raised."""
        opts = unit.options
        stem = sources.relative_stem(unit.path, opts.get("root", unit.path))
        dataset = opts.get("dataset", self.dataset)
        system_id = f"{dataset}/{stem}/{key}"
        source = f"{unit.path}[{key}]"
        if isinstance(atoms, RecordError):
            return BadRecord(system_id, source, atoms.reason, f"{unit.path}: {atoms.detail}")
        group_by = opts.get("group_by") or default_group
        if group_by == "file":
            group_id = f"{dataset}/{stem}"
        elif group_by == "frame":
            group_id = system_id
        elif group_by in meta:
            group_id = f"{dataset}/{meta[group_by]}"
        else:
            return BadRecord(system_id, source, "missing_field",
                             f"{source}: field {group_by!r} (option group_by) not in the record's info")
        labels: dict[str, Any] = {}
        key = opts.get("property_key")
        if key:
            if key not in meta:
                return BadRecord(system_id, source, "missing_field",
                                 f"{source}: property {key!r} (option property_key) not in the record (keys: {sorted(meta)})")
            scale = len(atoms) if opts.get("property_per_atom") else 1
            labels = {"energy": float(meta[key]) * scale, "forces": None, "stress": None}
        return record_from_atoms(atoms, source, system_id, dataset=dataset, group_id=group_id,
                                 frame_kind=opts.get("frame_kind", self.frame_kind), **labels)


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


def stream_frames(url: str, fmt: str, storage_options: dict | None) -> Iterator[tuple[int, Any]]:
    """(index, Atoms or RecordError) of every frame of a file, read one at a time from a stream.

    A frame that cannot be parsed is its RecordError and the next frame follows; a file that
    cannot be opened or decompressed raises CorpusError naming it and the frame reached.
    """
    index = 0
    try:
        with sources.open_file(url, "rb", storage_options) as fobj:
            if fmt == "extxyz":
                for span in split_frames(fobj):
                    index = span.index
                    yield span.index, _or_error(frame_atoms, span)
            elif fmt == "traj":
                yield from _traj_frames(fobj)
            else:
                yield from _ase_frames(fobj, fmt, url)
    except CorpusError:
        raise
    except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as err:  # a torn or foreign file
        raise CorpusError(f"{url}: unreadable after frame {index} ({type(err).__name__}: {err})") from err


def _or_error(parse, item):
    try:
        return parse(item)
    except RecordError as error:
        return error


def _traj_frames(fobj) -> Iterator[tuple[int, Any]]:
    """Frames of an ASE trajectory by index (its header gives the count), each decoded alone."""
    from ase.io.trajectory import TrajectoryReader

    reader = TrajectoryReader(fobj)
    for index in range(len(reader)):
        try:
            yield index, reader[index]
        except Exception as err:  # noqa: BLE001 - ulm/numpy errors of one frame; the index says where the rest is
            yield index, RecordError("parse_error", f"frame {index}: cannot decode ({type(err).__name__}: {err})")


def _ase_frames(fobj, fmt: str, url: str) -> Iterator[tuple[int, Any]]:
    """Frames of a format ASE only reads as a whole stream (vasprun.xml): an error ends the file."""
    import ase.io

    frames = ase.io.iread(fobj, index=":", format=fmt)
    index = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as err:  # noqa: BLE001 - ASE parsers raise many types; name file and frame
            raise CorpusError(f"{url}: frame {index}: cannot parse ({type(err).__name__}: {err}); "
                              "this format cannot be split into frames, so the rest of the file is unread") from err
        yield index, atoms
        index += 1


def _connect(url: str, storage_options: dict | None):
    """An ASE database on a local copy of `url` (type from the URL's suffix: cached copies have none)."""
    import ase.db

    return ase.db.connect(sources.local_copy(url, storage_options), type=sources.base_suffix(url)[1:])


def _db_rows(db, unit: WorkUnit) -> Iterator[tuple[str, Any, dict]]:
    """(row id, Atoms or RecordError, key_value_pairs) of an ASE database, limited to the unit's row range."""
    try:
        limit = None if unit.stop is None else unit.stop - unit.start
        for row in db.select(offset=unit.start, limit=limit, sort="id"):
            try:
                yield str(row.id), row.toatoms(), dict(row.key_value_pairs)
            except Exception as err:  # noqa: BLE001 - one row's arrays are inconsistent; the next row is fine
                yield str(row.id), RecordError("parse_error", f"row {row.id}: cannot decode ({err})"), {}
    except CorpusError:
        raise
    except Exception as err:  # sqlite3 / json errors: the file is not a readable ASE database
        raise CorpusError(f"{unit.path}: not a readable ASE database ({type(err).__name__}: {err})") from err
