"""LMDB corpora: fairchem v1 LMDBs of pickled PyG `Data` (opt-in) and fairchem v2 `.aselmdb` (no pickle).

Pickled LMDB (`*.lmdb`, OC20/OC22 S2EF): keys "0".."N-1" (+ "length"), each value a pickled
`torch_geometric.data.Data` with pos (N,3) Å, cell (1,3,3) Å, atomic_numbers (N,), tags (N,),
fixed (N,), y eV (OC20 referenced, OC22 total), force (N,3) eV/Å, sid, fid. Unpickling runs
code from the file, so it needs `trust_pickle=True`; otherwise a CorpusError explains why.

ASE-LMDB (`*.aselmdb`): keys are ASE-db row ids ("1", "2", ...), values zlib-compressed JSON rows
of an ASE database; reserved keys "nextid", "deleted_ids", "metadata". Decoded with ase.io.jsonio.
Both are opened read-only from a local path (remote URLs are cached locally first).
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from atomforge.corpora import sources
from atomforge.corpora.base import BadRecord, CorpusError, StreamingCorpus, WorkUnit, build_record
from atomforge.schema import FRAME_KINDS, Structure

PICKLE_SUFFIX = ".lmdb"
ASELMDB_SUFFIX = ".aselmdb"
LMDB_SUFFIXES = (PICKLE_SUFFIX, ASELMDB_SUFFIX)
ASELMDB_RESERVED = (b"nextid", b"deleted_ids", b"metadata")


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


def record_keys(path: str) -> list[bytes]:
    """Record keys in order: "0".."N-1" for pickled LMDBs, live row ids for `.aselmdb`."""
    env = open_lmdb(path)
    with env.begin() as txn:
        if sources.base_suffix(path) == ASELMDB_SUFFIX:
            next_id = txn.get(b"nextid")
            last = _json_value(next_id, path, "nextid") if next_id is not None else env.stat()["entries"] + 1
            deleted = txn.get(b"deleted_ids")
            gone = set(_json_value(deleted, path, "deleted_ids")) if deleted is not None else set()
            keys = [str(i).encode() for i in range(1, int(last)) if i not in gone]
        else:
            num = env.stat()["entries"] - (1 if txn.get(b"length") is not None else 0)
            keys = [str(i).encode() for i in range(num)]
    env.close()
    return keys


def lmdb_units(reader, path: str, options: dict[str, Any]) -> list[WorkUnit]:
    """Work units of `records_per_unit` records over one LMDB file."""
    if sources.base_suffix(path) == PICKLE_SUFFIX and not reader.trust_pickle:
        refuse_pickle(path)
    num = len(record_keys(sources.local_copy(path, reader.storage_options)))
    step = reader.records_per_unit
    return [WorkUnit(reader.name, path, start, min(start + step, num), options) for start in range(0, num, step)]


def read_lmdb_unit(reader, unit: WorkUnit) -> Iterator[Structure | BadRecord]:
    """Records of one LMDB unit for the OC20/OC22 readers (`reader.name` is the dataset)."""
    path = sources.local_copy(unit.path, reader.storage_options)
    frame_kind = unit.options.get("frame_kind", reader.frame_kind)
    if sources.base_suffix(path) == ASELMDB_SUFFIX:
        from atomforge.corpora.asefiles import record_from_atoms

        stem = sources.relative_stem(unit.path, unit.options.get("root", unit.path))
        for key, atoms, meta in read_aselmdb_rows(path, unit):
            yield from _aselmdb_record(reader, atoms, meta, f"{unit.path}[row {key}]", f"{stem}/{key}", frame_kind,
                                       record_from_atoms)
        return
    if not reader.trust_pickle:
        refuse_pickle(unit.path)
    for key, fields in _pickled_rows(path, unit):
        yield _pyg_record(fields, f"{unit.path}[{key}]", reader.name, frame_kind)


def _pickled_rows(path: str, unit: WorkUnit) -> Iterator[tuple[str, dict[str, Any]]]:
    env = open_lmdb(path)
    with env.begin() as txn:
        for index in range(unit.start, unit.stop if unit.stop is not None else len(record_keys(path))):
            value = txn.get(str(index).encode())
            if value is None:
                raise CorpusError(f"{path}: record {index}: key missing")
            yield str(index), _data_fields(pickle.loads(value))
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
    system = _oc_id(sid, "random") if sid is not None else source.rsplit("/", 1)[-1]
    frame = _oc_id(fid, "frame") if fid is not None else "frame0"
    system_id = f"{dataset}/{system}/{frame}"
    for name in ("atomic_numbers", "pos"):
        if name not in fields:
            raise CorpusError(f"{source}: {system_id}: field '{name}' missing")
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


def _oc_id(value: Any, prefix: str) -> str:
    text = str(value.item() if hasattr(value, "item") else value)
    return text if text.startswith(prefix) else f"{prefix}{text}"


def _aselmdb_record(reader, atoms, meta: dict, source: str, key: str, frame_kind: str, record_from_atoms):
    """One `.aselmdb` row as an OC20 (referenced, needs a reference energy) or OC22 (total) record."""
    dataset = reader.name
    system_id = f"{dataset}/{key}"
    extra: dict[str, Any] = {}
    if reader.energy_convention == "referenced":
        reference = meta.get("reference_energy", meta.get("ref_energy"))
        total = atoms.calc.results.get("energy") if atoms.calc is not None else None
        if reference is None or total is None:
            yield BadRecord(system_id, source, "missing_label",
                            f"{source}: {system_id}: field 'reference_energy' or 'energy' missing")
            return
        extra = {"energy": float(total) - float(reference), "total_energy": float(total)}
    group_id = f"{dataset}/{meta['sid']}" if "sid" in meta else system_id  # one relaxation = one group
    yield record_from_atoms(atoms, source, system_id, dataset=dataset, group_id=group_id,
                            frame_kind=frame_kind, **extra)


def read_aselmdb_rows(path: str, unit: WorkUnit) -> Iterator[tuple[str, Any, dict]]:
    """(row id, Atoms, key_value_pairs + data) of an `.aselmdb` file within the unit's range."""
    from ase.db.row import AtomsRow

    keys = record_keys(path)[unit.start:unit.stop]
    env = open_lmdb(path)
    with env.begin() as txn:
        for key in keys:
            value = txn.get(key)
            if value is None:
                raise CorpusError(f"{path}: row {key.decode()}: key missing")
            row = _json_value(value, path, f"row {key.decode()}")
            for name in ("numbers", "positions", "cell", "pbc", "forces", "stress"):
                if name in row and row[name] is not None:
                    row[name] = np.asarray(row[name])
            meta = {**row.get("key_value_pairs", {}), **(row.get("data") or {})}
            yield key.decode(), AtomsRow(row).toatoms(), meta
    env.close()


def _json_value(value: bytes, path: str, what: str) -> Any:
    from ase.io.jsonio import decode

    try:
        return decode(zlib.decompress(value).decode())
    except (zlib.error, ValueError) as err:
        raise CorpusError(f"{path}: {what}: not zlib-compressed JSON ({err})") from err
