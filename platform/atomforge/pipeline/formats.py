"""Shard encodings: Parquet (zstd, the primary format) and WebDataset tar, both byte-deterministic.

A WebDataset sample is one structure: `<key>.meta.json` (scalar fields) plus one `<key>.<field>.npy`
per array field present, with the Arrow dtypes of `schema.FIELDS`. The key is the row's index in
the shard (system ids may contain dots and slashes, which tar keys cannot); the system id is in
the JSON. Tar members carry mtime 0, so the same rows give the same bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from atomforge.schema import ARROW_SCHEMA, FIELDS

PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 3, "write_statistics": True}
SCALAR_FIELDS = tuple(f.name for f in FIELDS if not pa.types.is_list(f.arrow_type)
                      and not pa.types.is_fixed_size_list(f.arrow_type))
ARRAY_FIELDS = {f.name: f.arrow_type.value_type.to_pandas_dtype() for f in FIELDS if f.name not in SCALAR_FIELDS}
EXTENSIONS = {"parquet": ".parquet", "webdataset": ".tar"}


def rows_to_arrow(rows: list[dict[str, Any]]) -> pa.Table:
    """The same table as `schema.rows_to_table`, built column-wise from concatenated arrays.

    Building list columns from one values array + offsets is ~10x faster than `from_pydict` over
    per-row numpy arrays, which was the largest cost after the neighbor search (benchmarks/preprocess.py).
    """
    columns = []
    for spec in FIELDS:
        values = [row[spec.name] for row in rows]
        kind = spec.arrow_type
        if pa.types.is_fixed_size_list(kind):
            columns.append(_fixed_list_column(values, kind))
        elif pa.types.is_list(kind):
            columns.append(_list_column(values, kind))
        else:
            columns.append(pa.array(values, type=kind))
    return pa.Table.from_arrays(columns, schema=ARROW_SCHEMA)


def _list_column(values: list, kind: pa.ListType) -> pa.Array:
    dtype = kind.value_type.to_pandas_dtype()
    missing = np.array([v is None for v in values], dtype=bool)
    arrays = [np.asarray(v, dtype=dtype).reshape(-1) for v in values if v is not None]
    lengths = np.zeros(len(values), dtype=np.int32)
    lengths[~missing] = [len(a) for a in arrays]
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    flat = pa.array(np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype), type=kind.value_type)
    return pa.ListArray.from_arrays(offsets, flat, type=kind, mask=pa.array(missing) if missing.any() else None)


def _fixed_list_column(values: list, kind: pa.FixedSizeListType) -> pa.Array:
    dtype = kind.value_type.to_pandas_dtype()
    size = kind.list_size
    missing = np.array([v is None for v in values], dtype=bool)
    flat = np.zeros((len(values), size), dtype=dtype)
    for i, v in enumerate(values):
        if v is not None:
            flat[i] = np.asarray(v, dtype=dtype).reshape(-1)
    array = pa.array(flat.reshape(-1), type=kind.value_type)
    mask = pa.array(missing) if missing.any() else None
    return pa.FixedSizeListArray.from_arrays(array, type=kind, mask=mask)


def _lists(values: np.ndarray, lengths: np.ndarray, kind: pa.ListType, present: np.ndarray | None = None) -> pa.Array:
    """A list column from concatenated `values` and per-row `lengths`; rows with present False are null."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=kind.value_type)
    mask = None if present is None or present.all() else pa.array(~present)
    return pa.ListArray.from_arrays(pa.array(offsets), flat, type=kind, mask=mask)


def _fixed(values: np.ndarray, kind: pa.FixedSizeListType, present: np.ndarray | None = None) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(values, dtype=kind.value_type.to_pandas_dtype()).reshape(-1),
                    type=kind.value_type)
    mask = None if present is None or present.all() else pa.array(~present)
    return pa.FixedSizeListArray.from_arrays(flat, type=kind, mask=mask)


def batch_to_arrow(batch, edges, split: np.ndarray) -> pa.Table:
    """The shard table of a `StructureBatch` and its `columnar.BatchEdges`, built from whole columns.

    Equals `schema.rows_to_table` over `schema.to_row(structure, graph, split)` row by row, without
    a dict or an array per row: each list column is one values buffer plus offsets.
    """
    types = {f.name: f.arrow_type for f in FIELDS}
    n_atoms = batch.num_atoms
    n_edges = np.diff(edges.edge_offsets)
    atom_of = batch.frame_of_atom

    def optional_atoms(name: str, width: int, dtype) -> pa.Array:
        present = getattr(batch, f"has_{name}")
        values = getattr(batch, name)[present[atom_of]].astype(dtype)
        return _lists(values, n_atoms * width * present, types[name], present)

    def optional_scalar(name: str) -> pa.Array:
        present = getattr(batch, f"has_{name}")
        return pa.array(getattr(batch, name), type=types[name], mask=None if present.all() else ~present)

    columns = {
        "system_id": pa.array(batch.system_id.tolist(), type=pa.string()),
        "dataset": pa.array(batch.dataset.tolist(), type=pa.string()),
        "group_id": pa.array(batch.group_id.tolist(), type=pa.string()),
        "frame_kind": pa.array(batch.frame_kind.tolist(), type=pa.string()),
        "split": pa.array(list(split), type=pa.string()),
        "num_atoms": pa.array(n_atoms.astype(np.int32)),
        "num_edges": pa.array(n_edges.astype(np.int32)),
        "atomic_numbers": _lists(batch.atomic_numbers.astype(np.uint8), n_atoms, types["atomic_numbers"]),
        "positions": _lists(batch.positions.astype(np.float32), 3 * n_atoms, types["positions"]),
        "cell": _fixed(batch.cell.reshape(-1, 9), types["cell"], batch.has_cell),
        "pbc": _fixed(batch.pbc, types["pbc"]),
        "energy": optional_scalar("energy"),
        "total_energy": optional_scalar("total_energy"),
        "forces": optional_atoms("forces", 3, np.float32),
        "stress": _fixed(batch.stress.reshape(-1, 9), types["stress"], batch.has_stress),
        "fixed": optional_atoms("fixed", 1, bool),
        "tags": optional_atoms("tags", 1, np.int8),
        "edge_src": _lists(edges.src, n_edges, types["edge_src"]),
        "edge_dst": _lists(edges.dst, n_edges, types["edge_dst"]),
        "edge_shift": _lists(edges.shifts, 3 * n_edges, types["edge_shift"]),
    }
    return pa.Table.from_arrays([columns[name] for name in ARROW_SCHEMA.names], schema=ARROW_SCHEMA)


def write_parquet(table: pa.Table) -> bytes:
    """One Parquet file (zstd, one row group) holding `table`."""
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=max(table.num_rows, 1), **PARQUET_OPTIONS)
    return sink.getvalue()


def encode_parquet(rows: list[dict[str, Any]]) -> bytes:
    """One Parquet file (zstd, one row group) holding `rows` with the shard schema."""
    sink = io.BytesIO()
    pq.write_table(rows_to_arrow(rows), sink, row_group_size=max(len(rows), 1), **PARQUET_OPTIONS)
    return sink.getvalue()


def encode_webdataset(rows: list[dict[str, Any]]) -> bytes:
    """One WebDataset tar holding `rows` as samples (see the module docstring)."""
    import webdataset as wds

    sink = io.BytesIO()
    writer = wds.TarWriter(sink, encoder=False, mtime=0.0, user="atomforge", group="atomforge")
    writer.tarstream.format = tarfile.USTAR_FORMAT  # TarWriter 1.0.2 drops its `format`; PAX headers cost 2x
    for index, row in enumerate(rows):
        sample = {"__key__": f"{index:08d}", "meta.json": json.dumps(_scalars(row), sort_keys=True).encode()}
        for name, dtype in ARRAY_FIELDS.items():
            if row[name] is not None:
                sample[f"{name}.npy"] = _npy(np.asarray(row[name], dtype=dtype))
        writer.write(sample)
    writer.close()
    return sink.getvalue()


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A shard row (as `pyarrow.Table.to_pylist` gives it) from a raw WebDataset sample of bytes."""
    row: dict[str, Any] = dict.fromkeys(ARROW_SCHEMA.names)
    row.update(json.loads(sample["meta.json"]))
    for name in ARRAY_FIELDS:
        member = sample.get(f"{name}.npy")
        if member is not None:
            row[name] = np.load(io.BytesIO(member), allow_pickle=False).tolist()
    return row


def _scalars(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in SCALAR_FIELDS}


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
