"""Published shards: `open_shards(url)` -> the manifest, and the one read path, `ShardSet.loader(...)`.

    shards = open_shards("s3://bucket/shards/oc20")
    for batch in shards.loader("train", max_atoms=2048, num_workers=4):   # model-ready batches
        ...

Only shards listed in `manifest.json` are visible; anything else under the output (an unfinished
run's files, markers) is ignored. The manifest's schema version must be the one this code reads,
and every shard the loader reads is checked against the manifest's size and sha256. `table()` reads
a split as one Arrow table, for inspection and tests (not for training: see `atomforge.loader`).
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq

from atomforge.loader import AtomBudgetPlanner, ShardLoader
from atomforge.schema import SCHEMA_VERSION
from atomforge.shard_reader import Source
from atomforge.storage import arrow_filesystem, filesystem, read_bytes, retry
from atomforge.streams import RowStream, ShardFile

MANIFEST_NAME = "manifest.json"


class ShardSet:
    """A published preprocessing output: its manifest, its shard files per split, and loaders over them."""

    def __init__(self, url: str, manifest: dict, fs, root: str, storage_options: dict | None) -> None:
        self.url = url
        self.manifest = manifest
        self.fs = fs
        self.root = root
        self.storage_options = storage_options

    def shards(self, split: str, fmt: str = "parquet", dataset: str | None = None) -> list[dict]:
        """Manifest entries of `split`'s shards in `fmt`, optionally only those holding `dataset`."""
        if fmt not in self.manifest["formats"]:
            raise ValueError(f"{self.url} has no {fmt} shards (formats: {self.manifest['formats']})")
        return [s for s in self.manifest["shards"]
                if s["split"] == split and s["format"] == fmt and (dataset is None or dataset in s["datasets"])]

    def paths(self, split: str, fmt: str = "parquet", dataset: str | None = None) -> list[str]:
        """Filesystem paths (no protocol) of `split`'s shards."""
        return [f"{self.root}/{s['path']}" for s in self.shards(split, fmt, dataset)]

    def files(self, split: str, dataset: str | None = None) -> tuple[ShardFile, ...]:
        """`split`'s Parquet shards with the sizes and checksums that guard every read.

        Raises ValueError when a shard holds several datasets but one is asked for (a loader's rows
        must all be that dataset's), or when the manifest lacks a shard's size or sha256.
        """
        entries = self.shards(split, "parquet", dataset)
        mixed = [e["path"] for e in entries if dataset is not None and len(e["datasets"]) > 1]
        if mixed:
            raise ValueError(f"{self.url}: shards {mixed} mix datasets; a loader of {dataset!r} needs one per shard")
        unguarded = [e["path"] for e in entries if "sha256" not in e or "bytes" not in e]
        if unguarded:
            raise ValueError(f"{self.url}: manifest lists shards {unguarded} without bytes/sha256")
        return tuple(ShardFile(f"{self.root}/{e['path']}", int(e["rows"]), int(e["bytes"]), e["sha256"]) for e in entries)

    def source(self, split: str, *, dataset: str | None = None, cutoff: float | None = None,
               max_neighbors: int | None | str = "manifest", tie_rule: str | None = None, task: int = 0) -> Source:
        """The loader's view of `split`: files plus the graph it feeds (defaults: the manifest's graph block)."""
        graph = self.manifest.get("graph", {})
        files = self.files(split, dataset)
        if not files or sum(f.num_rows for f in files) == 0:
            raise ValueError(f"{self.url}: split {split!r} has no rows" + (f" of {dataset!r}" if dataset else ""))
        cutoff = float(graph["cutoff"] if cutoff is None else cutoff)
        limit = graph.get("max_neighbors") if max_neighbors == "manifest" else max_neighbors
        stored = graph.get("cutoff", cutoff)
        if cutoff > stored + graph.get("skin", 0.0) + 1e-9:
            raise ValueError(f"{self.url}: cutoff {cutoff} Å exceeds the stored graph's {stored} + skin Å")
        return Source(dataset or split, self.url, files, cutoff, limit, tie_rule or graph.get("tie_rule", "strict"),
                      task, self.storage_options)

    def loader(self, split: str, *, max_atoms: int, max_structures: int | None = None, shuffle: bool = True,
               seed: int = 0, rank: int = 0, world: int = 1, num_workers: int = 0, pin_memory: bool = False,
               epochs: int | None = 1, dataset: str | None = None, cutoff: float | None = None,
               max_neighbors: int | None | str = "manifest", tie_rule: str | None = None, task: int = 0,
               chunk_rows: int = 512, shuffle_rows: int = 4096, **options) -> ShardLoader:
        """Model-ready batches (PyG `Batch`, the fields of `atomforge.batch.collate`) of `split`.

        Batches fill `max_atoms` (and at most `max_structures`) without dropping a row; one iteration
        runs `epochs` epochs (None: endless), each reshuffled by (seed, epoch) when `shuffle`; ranks
        read disjoint chunks of `chunk_rows` rows, shuffled within windows of `shuffle_rows`. The graph
        is the stored one re-filtered at `cutoff` Å and K = `max_neighbors` (default: the manifest's).
        `state_dict()` / `load_state_dict()` resume exactly; `options` go to `ShardLoader`.
        """
        source = self.source(split, dataset=dataset, cutoff=cutoff, max_neighbors=max_neighbors,
                             tie_rule=tie_rule, task=task)
        stream = RowStream(source.files, seed=seed, rank=rank, world=world, chunk_rows=chunk_rows,
                           shuffle_rows=shuffle_rows, shuffle=shuffle)
        planner = AtomBudgetPlanner(stream, max_atoms, max_structures, epochs)
        return ShardLoader([source], planner, num_workers=num_workers, pin_memory=pin_memory, **options)

    def table(self, split: str, columns: list[str] | None = None) -> pa.Table:
        """`split`'s Parquet rows as one Arrow table in manifest order (inspection and tests)."""
        tables = [retry(lambda p=path: pq.read_table(p, filesystem=arrow_filesystem(self.fs), columns=columns),
                        f"read {path}") for path in self.paths(split)]
        if tables:
            return pa.concat_tables(tables)
        from atomforge.schema import ARROW_SCHEMA

        schema = ARROW_SCHEMA if columns is None else pa.schema([ARROW_SCHEMA.field(c) for c in columns])
        return schema.empty_table()

    def missing(self, shards: list[dict] | None = None) -> list[str]:
        """'path (why)' for listed shards (default: all) absent or of another size than listed.

        One listing per shard folder, no data read: cheap enough to run before every training run.
        """
        shards = self.manifest["shards"] if shards is None else shards
        sizes: dict[str, int] = {}
        for folder in sorted({s["path"].rpartition("/")[0] for s in shards}):
            path = f"{self.root}/{folder}"
            self.fs.invalidate_cache(path)
            if retry(lambda p=path: self.fs.exists(p), f"stat {path}"):
                for info in retry(lambda p=path: self.fs.ls(p, detail=True), f"list {path}"):
                    sizes[f"{folder}/{info['name'].rstrip('/').rsplit('/', 1)[-1]}"] = info["size"]
        problems = []
        for shard in shards:
            found = sizes.get(shard["path"])
            if found is None:
                problems.append(f"{shard['path']} (missing)")
            elif "bytes" in shard and found != shard["bytes"]:
                problems.append(f"{shard['path']} ({found} bytes, manifest says {shard['bytes']})")
        return problems

    def verify(self, shards: list[dict] | None = None) -> list[str]:
        """Paths of listed shards whose bytes do not match the manifest's sha256 (empty = all good)."""
        bad = []
        for shard in self.manifest["shards"] if shards is None else shards:
            data = read_bytes(self.fs, f"{self.root}/{shard['path']}")
            if len(data) != shard["bytes"] or hashlib.sha256(data).hexdigest() != shard["sha256"]:
                bad.append(shard["path"])
        return bad

    def quarantine(self):
        """The quarantine table (pyarrow): system_id, source, reason, detail."""
        path = f"{self.root}/{self.manifest['quarantine']['path']}"
        return pq.read_table(path, filesystem=arrow_filesystem(self.fs))


def open_shards(url: str, storage_options: dict | None = None) -> ShardSet:
    """The published dataset at `url` (a directory or prefix holding manifest.json, any fsspec URL).

    Raises FileNotFoundError without a manifest, ValueError when its schema version is not this code's.
    """
    fs, root = filesystem(url, storage_options)
    path = f"{root}/{MANIFEST_NAME}"
    try:
        manifest = json.loads(read_bytes(fs, path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{url} has no {MANIFEST_NAME}: not a published dataset (or the run is unfinished)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{url}/{MANIFEST_NAME} is not valid JSON (truncated or partly copied?): {err}; "
                         "re-copy it or rerun the preprocessing that wrote it") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        raise ValueError(f"{url}/{MANIFEST_NAME} is not a shard manifest (no 'shards' list)")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"{url}: shard schema version {version!r}, this atomforge reads {SCHEMA_VERSION!r}: "
                         "re-run the pipeline to rewrite the shards")
    return ShardSet(url, manifest, fs, root, storage_options)
