"""The manifest: assembled from completion markers, checked against a listing, written last to publish.

Markers carry counts (per quarantine reason), shard entries and label sums, never one entry per
record, so building the manifest takes memory in the number of work units and shards; the
quarantine table is streamed from the units' own files.

Keys (all JSON): schema_version, code_version, fingerprint (of the config), version (config +
source bytes: the shards' `v-<version>/` prefix), previous {version, changed_sources [{path,
change}]} or null, corpus, input_url, formats, graph, split, datasets {name: {energy_convention}},
sources [{path, bytes, stamp, sha256}], counts {read, written, quarantined, read_complete,
uncounted_sources [{path, records}], splits {split: {rows, atoms}}}, shards [{path, format, split,
datasets, rows, atoms, bytes, sha256, num_atoms_histogram}], statistics {dataset:
{linear_reference, energy_mean, energy_std, force_rms, num_structures, num_with_energy,
num_atoms_histogram}}, quarantine {path, counts {reason: n}} (reasons: docs/bad-data.md).
Storage options (endpoints, credentials) are never part of it.
"""

from __future__ import annotations

import io
import json
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import atomforge
from atomforge.pipeline.config import SPLITS, PipelineConfig
from atomforge.pipeline.formats import PARQUET_OPTIONS
from atomforge.pipeline.label_stats import merge_all
from atomforge.schema import SCHEMA_VERSION
from atomforge.storage import exists, read_bytes, retry, write_bytes, write_file

MANIFEST_NAME = "manifest.json"


def load_published(fs, path: str) -> dict | None:
    """The published manifest at `path`, or None when the output is not complete."""
    if not exists(fs, path):
        return None
    return json.loads(read_bytes(fs, path))


def code_version() -> dict:
    """Package version and, where the source is a git checkout, its commit."""
    commit = None
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(atomforge.__file__).parent,
                                capture_output=True, text=True, timeout=5, check=False)
        commit = result.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"atomforge": atomforge.__version__, "git_commit": commit}


def _check_listed(fs, root: str, version: str, shards: list[dict]) -> None:
    """Every shard named by a marker is present with its recorded size (one listing of the prefix)."""
    fs.invalidate_cache(f"{root}/{version}")
    listed = retry(lambda: fs.find(f"{root}/{version}", detail=True), f"list {root}/{version}")
    sizes = {path.rstrip("/").split(f"/{version}/", 1)[-1]: info["size"] for path, info in listed.items()}
    for shard in shards:
        name = shard["path"].split("/", 1)[1]
        if sizes.get(name) != shard["bytes"]:
            raise RuntimeError(f"shard {shard['path']} is missing or has {sizes.get(name)} bytes, "
                               f"expected {shard['bytes']}: rerun the pipeline to rewrite it")


QUARANTINE_SCHEMA = pa.schema([(name, pa.string()) for name in ("system_id", "source", "reason", "detail")])


def quarantine_parquet(records: list[dict]) -> bytes:
    """Quarantine records (system_id, source, reason, detail) as Parquet bytes (zstd)."""
    table = pa.table({f.name: pa.array([r[f.name] for r in records], pa.string()) for f in QUARANTINE_SCHEMA},
                     schema=QUARANTINE_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    return sink.getvalue()


def write_quarantine(fs, root: str, relpath: str, unit_files: list[str], extra: list[dict]) -> None:
    """The quarantine table: the units' files in plan order, then `extra`, one unit in memory at a time.

    Written to a local file first and copied up whole, so the table never sits in memory.
    """
    with tempfile.TemporaryDirectory(prefix="atomforge-quarantine-") as scratch:
        local = f"{scratch}/quarantine.parquet"
        with pq.ParquetWriter(local, QUARANTINE_SCHEMA, **PARQUET_OPTIONS) as writer:
            for path in unit_files:
                table = pq.read_table(io.BytesIO(read_bytes(fs, path)))
                if table.num_rows:
                    writer.write_table(table)
            if extra:
                writer.write_table(pq.read_table(io.BytesIO(quarantine_parquet(extra))))
        write_file(fs, local, f"{root}/{relpath}")


def read_completeness(uncounted_sources: list[str]) -> dict:
    """`read_complete` (bool) and `uncounted_sources`: files unreadable as a whole, whose records are unknown.

    Such a file is one `unreadable_file` entry in read and quarantined; its true record count is
    "unknown, file unreadable", so `read` is then a lower bound.
    """
    uncounted = sorted(set(uncounted_sources))
    return {"read_complete": not uncounted,
            "uncounted_sources": [{"path": path, "records": "unknown, file unreadable"} for path in uncounted]}


def build(config: PipelineConfig, reader, unit_markers: list[dict], sources: list[dict], layout,
          extra_quarantine: list[dict], previous: dict | None) -> dict:
    """The manifest from the unit markers, in plan order; checks counts reconcile.

    `extra_quarantine`: records dropped at publish time (duplicates), already gone from the parts.
    """
    parts = [part for marker in unit_markers for part in marker["parts"]]
    reasons = Counter(q["reason"] for q in extra_quarantine)
    for marker in unit_markers:
        reasons.update(marker["quarantine"]["reasons"])
    num_quarantined = sum(reasons.values())
    num_read = sum(m["num_read"] for m in unit_markers)
    num_written = sum(p["num_rows"] for p in parts)
    if num_read != num_written + num_quarantined:
        raise RuntimeError(f"counts do not reconcile: read {num_read} != written {num_written} "
                           f"+ quarantined {num_quarantined}")
    paths = [shard["path"] for part in parts for shard in part["shards"]]
    if len(set(paths)) != len(paths):
        raise RuntimeError("a shard is listed twice: two work units share markers")
    splits = {s: {"rows": 0, "atoms": 0} for s in SPLITS}
    for part in parts:
        splits[part["split"]]["rows"] += part["num_rows"]
        splits[part["split"]]["atoms"] += part["num_atoms"]
    stats = merge_all([p["statistics"] for p in parts])
    convention = getattr(reader, "energy_convention", "total")
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "code_version": code_version(),
        "fingerprint": config.fingerprint,
        "version": layout.version.removeprefix("v-"),
        "previous": previous,
        "corpus": config.corpus,
        "input_url": config.input_url,
        "formats": list(config.formats),
        "graph": config.graph_params(),
        "split": {"method": "official split where the reader gives one, else sha256(seed:group_id)",
                  "fractions": list(config.split_fractions), "seed": config.seed},
        "validation": {"max_atoms": config.max_atoms, "max_abs_force": config.max_abs_force,
                       "max_abs_energy_per_atom": config.max_abs_energy_per_atom},
        "datasets": {name: {"energy_convention": convention} for name in sorted(stats)},
        "sources": sources,
        "counts": {"read": num_read, "written": num_written, "quarantined": num_quarantined, "splits": splits,
                   **read_completeness([s for m in unit_markers for s in m["quarantine"]["uncounted_sources"]])},
        "shards": [shard for part in parts for shard in part["shards"]],
        "statistics": {name: acc.finalize() for name, acc in sorted(stats.items())},
        "quarantine": {"path": layout.quarantine, "counts": dict(sorted(reasons.items()))},
    }
    return manifest


def publish(fs, layout, config: PipelineConfig, reader, unit_markers: list[dict], sources: list[dict],
            quarantine_files: list[str], extra_quarantine: list[dict], previous: dict | None) -> dict:
    """Check every shard is listed, write the quarantine table (units' files, then `extra_quarantine`), then
    the manifest (last)."""
    manifest = build(config, reader, unit_markers, sources, layout, extra_quarantine, previous)
    _check_listed(fs, layout.root, layout.version, manifest["shards"])
    write_quarantine(fs, layout.root, layout.quarantine, quarantine_files, extra_quarantine)
    write_bytes(fs, layout.manifest, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest
