"""LMDB corpora: fairchem v1 LMDBs of pickled PyG `Data` (opt-in) and fairchem v2 `.aselmdb` (no pickle).

Pickled LMDB (`*.lmdb`, OC20/OC22 S2EF): keys "0".."N-1" (+ "length"), each value a pickled
`torch_geometric.data.Data` with pos (N,3) Å, cell (1,3,3) Å, atomic_numbers (N,), tags (N,),
fixed (N,), y eV (OC20 referenced, OC22 total), force (N,3) eV/Å, sid, fid. Unpickling runs
code from the file, so it needs `trust_pickle=True`; otherwise a CorpusError explains why.

ASE-LMDB (`*.aselmdb`): an ASE database in one LMDB file, read with ase-db-backends (the library
fairchem writes it with) through `ase.db.connect(..., type="aselmdb", readonly=True)`. A row whose
`data` holds OC20/OC22 `sid` and `fid` gets the same system_id as the frame in the other formats
(`oc20/random<sid>/frame<fid>`), so duplicates across formats are caught; otherwise
`<dataset>/<file stem>/<row id>`.
Both are opened read-only from a local path (remote URLs are cached locally first). Each record is
decoded alone: an undecodable value, a missing key or field is one BadRecord and the next follows.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np

from atomforge.corpora import sources
from atomforge.corpora.base import (
    BadRecord,
    CorpusError,
    RecordError,
    StreamingCorpus,
    WorkUnit,
    build_record,
)
from atomforge.schema import FRAME_KINDS, Structure

PICKLE_SUFFIX = ".lmdb"
ASELMDB_SUFFIX = ".aselmdb"
LMDB_SUFFIXES = (PICKLE_SUFFIX, ASELMDB_SUFFIX)


class OpenCatalystReader(StreamingCorpus):
    """What the OC20 and OC22 readers share: their options, and units of one file or one LMDB record range.

    Options:
        frame_kind: "relax" (S2EF trajectories, default) or "md" for MD / rattled extras.
        trust_pickle: allow unpickling `*.lmdb` values (runs code from the file: trusted sources only).
        records_per_unit: LMDB records per work unit (default 10,000).
        storage_options: fsspec options; kept on the reader, never in work units.
    """

    def __init__(self, url: str, frame_kind: str = "relax", trust_pickle: bool = False,
                 records_per_unit: int = 10_000, storage_options: dict | None = None) -> None:
        if frame_kind not in FRAME_KINDS:
            raise ValueError(f"option 'frame_kind' is {frame_kind!r}, expected one of {FRAME_KINDS}")
        self.url = url
        self.frame_kind = frame_kind
        self.trust_pickle = trust_pickle
        self.records_per_unit = records_per_unit
        self.storage_options = storage_options

    def file_units(self, suffixes: tuple[str, ...], options: dict[str, Any]) -> list[WorkUnit]:
        """One unit per file ending in `suffixes`; LMDBs split into record ranges."""
        units = []
        for path in sources.list_files(self.url, suffixes + LMDB_SUFFIXES, self.storage_options):
            if sources.base_suffix(path) in LMDB_SUFFIXES:
                units += lmdb_units(self, path, options)
            else:
                units.append(WorkUnit(self.name, path, 0, None, options))
        return units


def open_lmdb(path: str):
    """A read-only, lock-free LMDB environment on a single file (fairchem's `subdir=False` layout)."""
    import lmdb

    try:
        return lmdb.open(path, subdir=False, readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error as err:
        raise CorpusError(f"{path}: not a readable LMDB file ({err})") from err


def refuse_pickle(path: str) -> None:
    raise CorpusError(
        f"{path}: values of this LMDB are pickled Python objects and unpickling runs code from the file; "
        "pass trust_pickle=True (CLI --trust-pickle) only for files from a source you trust, "
        "or convert it to .aselmdb / extxyz")


def connect_aselmdb(path: str):
    """A read-only ase-db-backends `LMDBDatabase` on a local `.aselmdb` file; CorpusError if unreadable."""
    import ase.db

    try:
        return ase.db.connect(path, type="aselmdb", readonly=True)
    except Exception as err:  # lmdb.Error, zlib / JSON errors in the id bookkeeping
        raise CorpusError(f"{path}: not a readable ASE-LMDB file ({type(err).__name__}: {err})") from err


def num_pickled_records(path: str) -> int:
    """Records of a fairchem v1 LMDB: keys "0".."N-1" (its "length" key excluded)."""
    env = open_lmdb(path)
    with env.begin() as txn:
        num = env.stat()["entries"] - (1 if txn.get(b"length") is not None else 0)
    env.close()
    return num


def lmdb_units(reader, path: str, options: dict[str, Any]) -> list[WorkUnit]:
    """Work units of `records_per_unit` records over one LMDB file."""
    local = sources.local_copy(path, reader.storage_options)
    if sources.base_suffix(path) == PICKLE_SUFFIX:
        if not reader.trust_pickle:
            refuse_pickle(path)
        num = num_pickled_records(local)
    else:
        num = len(connect_aselmdb(local).ids)
    step = reader.records_per_unit
    return [WorkUnit(reader.name, path, start, min(start + step, num), options) for start in range(0, num, step)]


def read_lmdb_unit(reader, unit: WorkUnit) -> Iterator[Structure | BadRecord]:
    """Records of one LMDB unit for the OC20/OC22 readers (`reader.name` is the dataset)."""
    path = sources.local_copy(unit.path, reader.storage_options)
    frame_kind = unit.options.get("frame_kind", reader.frame_kind)
    stem = sources.relative_stem(unit.path, unit.options.get("root", unit.path))
    if sources.base_suffix(unit.path) == ASELMDB_SUFFIX:
        for key, atoms, meta in aselmdb_rows(path, unit):
            yield _aselmdb_record(reader, atoms, meta, f"{unit.path}[row {key}]", f"{stem}/{key}", frame_kind)
        return
    if not reader.trust_pickle:
        refuse_pickle(unit.path)
    for key, fields in _pickled_rows(path, unit):
        source = f"{unit.path}[{key}]"
        if isinstance(fields, RecordError):
            yield BadRecord(f"{reader.name}/{stem}/row{key}", source, fields.reason, f"{source}: {fields.detail}")
        else:
            yield _pyg_record(fields, source, reader.name, frame_kind)


def _pickled_rows(path: str, unit: WorkUnit) -> Iterator[tuple[str, dict[str, Any] | RecordError]]:
    """(key, fields or RecordError) of each record in the unit's range, unpickled one at a time."""
    env = open_lmdb(path)
    stop = unit.stop if unit.stop is not None else num_pickled_records(path)
    with env.begin() as txn:
        for index in range(unit.start, stop):
            value = txn.get(str(index).encode())
            if value is None:
                yield str(index), RecordError("missing_record", f"record {index}: key missing from the LMDB")
                continue
            try:
                yield str(index), _data_fields(pickle.loads(value))
            except Exception as err:  # noqa: BLE001 - a torn or foreign pickle of one record
                yield str(index), RecordError("parse_error", f"record {index}: cannot unpickle ({type(err).__name__}: {err})")
    env.close()


def _data_fields(obj: Any) -> dict[str, Any]:
    """Plain numpy fields of a PyG `Data` (v1 or v2 pickles) or of a dict."""
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    elif not isinstance(obj, dict):
        obj = dict(vars(obj))
    return {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in obj.items()}


def _pyg_record(fields: dict[str, Any], source: str, dataset: str, frame_kind: str) -> Structure | BadRecord:
    sid, fid = fields.get("sid"), fields.get("fid")
    system = oc_id(sid, "random") if sid is not None else source.rsplit("/", 1)[-1]
    frame = oc_id(fid, "frame") if fid is not None else "frame0"
    system_id = f"{dataset}/{system}/{frame}"
    for name in ("atomic_numbers", "pos"):
        if name not in fields:
            return BadRecord(system_id, source, "missing_field", f"{source}: {system_id}: field '{name}' missing")
    cell = fields.get("cell")
    energy = fields.get("y")
    return build_record(
        source, system_id,
        atomic_numbers=np.rint(np.asarray(fields["atomic_numbers"], dtype=np.float64)).astype(np.int64),
        positions=fields["pos"],
        cell=None if cell is None else np.asarray(cell).reshape(3, 3),
        pbc=cell is not None,
        energy=None if energy is None else float(np.asarray(energy).reshape(())),
        forces=fields.get("force"),
        fixed=fields.get("fixed"),
        tags=fields.get("tags"),
        dataset=dataset,
        group_id=f"{dataset}/{system}",
        frame_kind=frame_kind,
    )


def oc_id(value: Any, prefix: str) -> str:
    """OC20's id text: 881568 -> 'random881568' (prefix "random"), 'random881568' kept, 'system1' kept."""
    text = str(value.item() if hasattr(value, "item") else value)
    return f"{prefix}{text}" if text.isdigit() else text


def _aselmdb_record(reader, atoms, meta: dict, source: str, key: str, frame_kind: str) -> Structure | BadRecord:
    """One `.aselmdb` row as an OC20 (referenced, needs a reference energy) or OC22 (total) record.

    With `sid` and `fid` in the row the ids are those of the other formats; else by file and row id.
    """
    from atomforge.corpora.asefiles import record_from_atoms

    dataset = reader.name
    if "sid" in meta and "fid" in meta:
        system = oc_id(meta["sid"], "random")
        system_id, group_id = f"{dataset}/{system}/{oc_id(meta['fid'], 'frame')}", f"{dataset}/{system}"
    else:
        system_id = f"{dataset}/{key}"
        group_id = f"{dataset}/{oc_id(meta['sid'], 'random')}" if "sid" in meta else system_id
    if isinstance(atoms, RecordError):
        return BadRecord(system_id, source, atoms.reason, f"{source}: {atoms.detail}")
    extra: dict[str, Any] = {}
    if reader.energy_convention == "referenced":
        reference = meta.get("reference_energy", meta.get("ref_energy"))
        total = atoms.calc.results.get("energy") if atoms.calc is not None else None
        if reference is None or total is None:
            return BadRecord(system_id, source, "missing_label",
                             f"{source}: {system_id}: field 'reference_energy' or 'energy' missing")
        extra = {"energy": float(total) - float(reference), "total_energy": float(total)}
    return record_from_atoms(atoms, source, system_id, dataset=dataset, group_id=group_id,
                             frame_kind=frame_kind, **extra)


def aselmdb_rows(path: str, unit: WorkUnit) -> Iterator[tuple[str, Any, dict]]:
    """(row id, Atoms or RecordError, key_value_pairs + data) of an `.aselmdb` file within the unit's range.

    Rows are decoded one by one by ase-db-backends; an undecodable row is its RecordError.
    """
    db = connect_aselmdb(path)
    try:
        for row_id in db.ids[unit.start:unit.stop]:
            try:
                row = db.get(row_id)
                atoms, meta = row.toatoms(), {**row.key_value_pairs, **(row.get("data") or {})}
            except Exception as err:  # noqa: BLE001 - zlib / JSON / shape errors of one row
                yield str(row_id), RecordError("parse_error", f"row {row_id}: cannot decode ({type(err).__name__}: {err})"), {}
                continue
            yield str(row_id), atoms, meta
    finally:
        db.close()
