"""Reading published shards: `open_shards(url)` -> manifest, rows, structures with graphs, Ray and PyTorch streams.

Only shards listed in `manifest.json` are visible; anything else under the output (an unfinished
run's files, markers) is ignored. Rows are dicts as `pyarrow.Table.to_pylist` gives them, with
the shard schema of `atomforge.schema` (`num_atoms` and `num_edges` top-level).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq

from atomforge.graph import NeighborGraph
from atomforge.schema import Structure, from_row, graph_from_row
from atomforge.storage import arrow_filesystem, filesystem, read_bytes, retry

MANIFEST_NAME = "manifest.json"


class ShardSet:
    """A published preprocessing output: its manifest and readers over its shards, per split."""

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

    def iter_rows(self, split: str, fmt: str | None = None, columns: list[str] | None = None) -> Iterator[dict]:
        """Rows of `split` in manifest order, from Parquet (default when present) or WebDataset."""
        fmt = fmt or ("parquet" if "parquet" in self.manifest["formats"] else "webdataset")
        if fmt == "webdataset":
            yield from self.torch_iterable(split)
            return
        for path in self.paths(split, "parquet"):
            table = retry(lambda p=path: pq.read_table(p, filesystem=arrow_filesystem(self.fs), columns=columns),
                          f"read {path}")
            yield from table.to_pylist()

    def iter_structures(self, split: str, fmt: str | None = None) -> Iterator[tuple[Structure, NeighborGraph]]:
        """(Structure, stored NeighborGraph) pairs of `split` (graph: cutoff + skin, K_store, strict)."""
        for row in self.iter_rows(split, fmt):
            yield from_row(row), graph_from_row(row)

    def verify(self) -> list[str]:
        """Paths of listed shards whose bytes do not match the manifest's sha256 (empty = all good)."""
        bad = []
        for shard in self.manifest["shards"]:
            data = read_bytes(self.fs, f"{self.root}/{shard['path']}")
            if len(data) != shard["bytes"] or hashlib.sha256(data).hexdigest() != shard["sha256"]:
                bad.append(shard["path"])
        return bad

    def quarantine(self):
        """The quarantine table (pyarrow): system_id, source, reason, detail."""
        path = f"{self.root}/{self.manifest['quarantine']['path']}"
        return pq.read_table(path, filesystem=arrow_filesystem(self.fs))

    def ray_dataset(self, split: str, task: Any = None, **read_kwargs):
        """A Ray Dataset (read_parquet) over `split`'s Parquet shards; `task` (a name or TaskSpec) filters.

        Extra keyword arguments go to `ray.data.read_parquet` (e.g. `shuffle="files"`, `columns`).
        """
        import ray.data

        name = getattr(task, "name", task)
        shards = self.shards(split, "parquet", name)
        if not shards:
            raise ValueError(f"{self.url}: no parquet shards for split {split!r}" + (f" and task {name!r}" if name else ""))
        dataset = ray.data.read_parquet([f"{self.root}/{s['path']}" for s in shards],
                                        filesystem=arrow_filesystem(self.fs), **read_kwargs)
        if name is not None and any(len(s["datasets"]) > 1 for s in shards):
            dataset = dataset.filter(lambda row: row["dataset"] == name)
        return dataset

    def torch_iterable(self, split: str, shuffle_shards: bool = False, seed: int = 0):
        """A WebDataset pipeline (a torch IterableDataset) of `split`'s rows; no Ray needed.

        Shards are split across DataLoader workers (and optionally shuffled by `seed`); each item is
        a row dict, ready for `atomforge.batch.collate`.
        """
        import webdataset as wds
        from webdataset.tariterators import group_by_keys, tar_file_expander

        from atomforge.pipeline.formats import decode_sample

        fs = self.fs

        def open_streams(sources):
            for source in sources:
                yield {"url": source["url"], "stream": retry(lambda u=source["url"]: fs.open(u, "rb"), f"open {source['url']}")}

        stages = [wds.SimpleShardList(self.paths(split, "webdataset"))]
        if shuffle_shards:
            stages.append(wds.detshuffle(bufsize=10_000, seed=seed))
        def decode(samples):  # not wds.map: it would add __key__ back into the row
            for sample in samples:
                yield decode_sample(sample)

        stages += [wds.split_by_worker, open_streams, tar_file_expander, group_by_keys, decode]
        return wds.DataPipeline(*stages)


def open_shards(url: str, storage_options: dict | None = None) -> ShardSet:
    """The published dataset at `url` (a directory or prefix holding manifest.json, any fsspec URL)."""
    fs, root = filesystem(url, storage_options)
    path = f"{root}/{MANIFEST_NAME}"
    try:
        manifest = json.loads(read_bytes(fs, path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{url} has no {MANIFEST_NAME}: not a published dataset (or the run is unfinished)") from None
    return ShardSet(url, manifest, fs, root, storage_options)
