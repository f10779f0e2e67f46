"""Duplicate system_ids across the whole dataset, found at publish time without holding every id in memory.

Each work unit writes, beside its marker, the ids of the rows it wrote, sorted:
`_work/v-<version>/ids/<unit>.jsonl`, one JSON line `[system_id, ordinal, split, part]` per row
(`ordinal`: the record's position in the unit's read order). Publishing merges these sorted
files in one streaming pass (`heapq.merge`, at most `FAN_IN` files open at once; more are first
merged in rounds into local temporary runs), so the driver's memory grows with the number of
work units and of duplicates, never with the number of structures.

The copy kept is the first in plan order: work units as the reader lists them (its sorted file
listing, then record ranges within a file), records in read order within a unit. Every later
copy is quarantined as `duplicate`, and only the shards that held one are rewritten (name
suffix `-dedup`), with their part's label statistics recomputed from the rows kept.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from atomforge.pipeline.formats import PARQUET_OPTIONS, decode_sample, encode_webdataset
from atomforge.pipeline.label_stats import StatsAccumulator
from atomforge.schema import from_row
from atomforge.storage import read_bytes, write_bytes

FAN_IN = 64  # sorted id files open at once during the merge
Entry = tuple  # (system_id, plan index, ordinal, split, part)


def write_ids(fs, path: str, rows: list[tuple[str, int, str, int]]) -> None:
    """A unit's written rows (system_id, ordinal, split, part), sorted by system_id, as JSON lines."""
    lines = (json.dumps(list(row)) for row in sorted(rows))
    write_bytes(fs, path, "".join(f"{line}\n" for line in lines).encode())


def _unit_entries(fs, path: str, plan_index: int) -> Iterator[Entry]:
    with fs.open(path, "rt") as handle:
        for line in handle:
            system_id, ordinal, split, part = json.loads(line)
            yield system_id, plan_index, ordinal, split, part


def _local_entries(path: Path) -> Iterator[Entry]:
    with path.open() as handle:
        for line in handle:
            yield tuple(json.loads(line))


def _merged(streams: list[Iterator[Entry]], scratch: Path) -> Iterator[Entry]:
    """All entries in (system_id, plan index, ordinal) order, merging at most FAN_IN streams at once."""
    round_number = 0
    while len(streams) > FAN_IN:
        runs = []
        for start in range(0, len(streams), FAN_IN):
            run = scratch / f"run-{round_number}-{start // FAN_IN}.jsonl"
            with run.open("w") as out:
                out.writelines(f"{json.dumps(list(e))}\n" for e in heapq.merge(*streams[start:start + FAN_IN]))
            runs.append(run)
        streams, round_number = [_local_entries(run) for run in runs], round_number + 1
    yield from heapq.merge(*streams)


def find(fs, id_paths: list[str]) -> list[tuple[Entry, Entry]]:
    """(duplicate, first copy) pairs over the units' sorted id files, given in plan order."""
    pairs = []
    with tempfile.TemporaryDirectory(prefix="atomforge-ids-") as scratch:
        streams = [_unit_entries(fs, path, index) for index, path in enumerate(id_paths)]
        first: Entry | None = None
        for entry in _merged(streams, Path(scratch)):
            if first is not None and entry[0] == first[0]:
                pairs.append((entry, first))
            else:
                first = entry
    return pairs


def quarantine_records(pairs: list[tuple[Entry, Entry]], unit_paths: list[str]) -> list[dict]:
    """Quarantine table rows (reason `duplicate`) naming where each dropped copy and the kept one came from."""
    return [{"system_id": dup[0], "source": unit_paths[dup[1]], "reason": "duplicate",
             "detail": f"{dup[0]}: also read from {unit_paths[first[1]]} (record {first[2]}), which is kept; "
                       f"this copy (record {dup[2]} of {unit_paths[dup[1]]}) is not written"}
            for dup, first in pairs]


def remove(fs, root: str, unit_markers: list[dict], pairs: list[tuple[Entry, Entry]]) -> None:
    """Rewrite the shards holding dropped copies without them; updates the markers' parts in place."""
    dropped: dict[tuple[int, str, int], set[str]] = {}
    for dup, _ in pairs:
        dropped.setdefault((dup[1], dup[3], dup[4]), set()).add(dup[0])
    for plan_index, marker in enumerate(unit_markers):
        for part in marker["parts"]:
            ids = dropped.get((plan_index, part["split"], part["part"]))
            if ids:
                _rewrite_part(fs, root, part, ids)


def _rewrite_part(fs, root: str, part: dict, ids: set[str]) -> None:
    """One part's shards (each format holds the same rows) without `ids`; counts and statistics redone."""
    shards, kept_rows = [], None
    for shard in part["shards"]:
        data = read_bytes(fs, f"{root}/{shard['path']}")
        if shard["format"] == "parquet":
            table = pq.read_table(io.BytesIO(data))
            table = table.filter(pc.invert(pc.is_in(table["system_id"], pa.array(sorted(ids)))))
            rows = table.to_pylist()
            out = io.BytesIO()
            pq.write_table(table, out, row_group_size=max(len(rows), 1), **PARQUET_OPTIONS)
            data = out.getvalue()
        else:
            rows = [row for row in tar_rows(data) if row["system_id"] not in ids]
            data = encode_webdataset(rows)
        kept_rows = rows
        if rows:
            shards.append(_rewritten(fs, root, shard, data, rows))
    assert kept_rows is not None, "a part with duplicates has shards"
    part.update(shards=shards, num_rows=len(kept_rows), num_atoms=int(sum(r["num_atoms"] for r in kept_rows)),
                statistics=_statistics(kept_rows))


def _rewritten(fs, root: str, shard: dict, data: bytes, rows: list[dict]) -> dict:
    stem, dot, extension = shard["path"].rpartition(".")
    path = f"{stem}-dedup{dot}{extension}"
    write_bytes(fs, f"{root}/{path}", data)
    sizes, counts = np.unique([row["num_atoms"] for row in rows], return_counts=True)
    return {**shard, "path": path, "rows": len(rows), "atoms": int(sum(r["num_atoms"] for r in rows)),
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "num_atoms_histogram": {"num_atoms": sizes.tolist(), "count": counts.tolist()}}


def tar_rows(data: bytes) -> list[dict]:
    """The rows of one WebDataset shard's bytes, in key order (as `encode_webdataset` wrote them)."""
    import tarfile

    samples: dict[str, dict] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            key, _, name = member.name.partition(".")
            samples.setdefault(key, {})[name] = tar.extractfile(member).read()
    return [decode_sample(samples[key]) for key in sorted(samples)]


def _statistics(rows: list[dict]) -> dict:
    """Per-dataset label sums of the kept rows, as `write_part` records them."""
    stats: dict[str, StatsAccumulator] = {}
    for row in rows:
        stats.setdefault(row["dataset"], StatsAccumulator()).add(from_row(row))
    return {name: acc.to_json() for name, acc in stats.items()}
